"""One bf16 training step of the issue's RankMixer config (T=16, D=768, L=2, k=4, batch 512,
AdamW fused, 2 threads) under torch.profiler, ops grouped by input shape: which copies are
weight casts and which are activation copies (quoted in docs/performance.md).

    python scripts/profile_step_shapes.py
"""
import torch, os
torch.set_num_threads(2)
from torch.profiler import profile, ProfilerActivity
from rankmixer.models import registry
from rankmixer.bench.speed_variants import TokenModel
from rankmixer.bench.steps import make_optimizer, make_train_step
from rankmixer.models.rankmixer import RankMixerBackbone
import torch.nn.functional as F
cfg = registry.parse_config("rankmixer-100m", {"expansion": 4})
m = TokenModel(RankMixerBackbone(cfg), 768)
x = F.layer_norm(torch.randn(512,16,768),(768,)); y=torch.randint(0,2,(512,1)).float()
opt = make_optimizer("adamw", list(m.parameters()))
step = make_train_step(lambda: m(x), y, [opt], "bf16", torch.device("cpu"))
step(); step()
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    step()
print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=30, max_shapes_column_width=70))
print(os.getloadavg())
