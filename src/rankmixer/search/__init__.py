"""Architecture search (``rankmixer search``): a declarative space of ranking architectures
(``space.py``) whose drawn architectures are ordinary ``searched`` models
(rankmixer.models.searched), searched as a tuning study (``run.py``: Optuna storage, resume,
retries; random search, TPE, the AutoML searcher and Rankitect's sampling-based search),
reported with FLOPs, parameters and the Pareto front (``report.py``)."""

from rankmixer.search.report import pareto_front, search_report
from rankmixer.search.run import SEARCH_REPORT, STRATEGIES, run_search
from rankmixer.search.space import ArchitectureSpace, load_architecture_space, parse_architecture_space

__all__ = ["ArchitectureSpace", "SEARCH_REPORT", "STRATEGIES", "load_architecture_space", "pareto_front",
           "parse_architecture_space", "run_search", "search_report"]
