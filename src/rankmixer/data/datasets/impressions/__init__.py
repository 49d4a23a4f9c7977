"""Impression logs and page histories (RACP's data, Chen et al. 2022).

* :mod:`.config`: :class:`ImpressionConfig`;
* :mod:`.simulate`: the synthetic impression log with a planted page-context effect;
* :mod:`.builder`: an impression log (synthetic, Avito's or any) into rows with page histories;
* :mod:`.avito`: the Avito Context Ad Clicks files as an impression log;
* :mod:`.columns`: the columns and the feature schema;
* :mod:`.preset`: the registered ``impressions`` dataset preset.

``docs/sessions_pages.md`` ("Pages") describes the data for users.
"""
