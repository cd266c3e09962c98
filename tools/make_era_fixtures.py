"""Make the checkpoint-compatibility fixtures in tests/fixtures/ with each dalle2-pytorch release itself.

For every release below, the release is installed (without dependencies) into a throwaway folder, and a child process
using only that release builds a tiny random DiffusionPrior, saves it the way that release's users save it, and records
the network's outputs on fixed inputs. `tests/test_checkpoints.py` loads each file with prior_nbdev.load_prior and
compares. Run from the repository root in the dev environment (it needs the reference's dependencies: x-clip, kornia, ...):

    python tools/make_era_fixtures.py
"""
import json, subprocess, sys, tempfile
from pathlib import Path

RELEASES = ['0.15.4', '0.23.1', '1.1.0', '1.8.4', '1.9.0', '1.15.6']
OUT = Path(__file__).resolve().parent.parent / 'tests' / 'fixtures'

CHILD = r'''
import sys, random, torch, inspect
import dalle2_pytorch.dalle2_pytorch as d2
from pathlib import Path
release, out = sys.argv[1], Path(sys.argv[2])
torch.manual_seed(0); random.seed(0)
params = inspect.signature(d2.DiffusionPriorNetwork.__init__).parameters
net_kwargs = dict(dim=16, depth=2, dim_head=8, heads=2, num_timesteps=None, normformer=True)
if 'max_text_len' in params: net_kwargs['max_text_len'] = 6
net = d2.DiffusionPriorNetwork(**net_kwargs)
prior_kwargs = dict(image_embed_dim=16, timesteps=20, cond_drop_prob=0.2, condition_on_text_encodings=True)
prior = d2.DiffusionPrior(net, **prior_kwargs)
g = torch.Generator().manual_seed(1)
with torch.no_grad():
    for p in prior.parameters(): p.add_(torch.randn(p.shape, generator=g) * 0.2)
    # a random N(0, 1) position bias, multiplied by 128 or 1024 in some eras, would make attention one-hot and hide
    # differences elsewhere (the time embedding, say): keep it small so every input matters
    net.causal_transformer.rel_pos_bias.relative_attention_bias.weight.mul_(0.01)
prior.eval()
x, text_embed = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
enc = torch.randn(3, 5, 16, generator=g); enc[0, 3:] = 0; enc[1, 1:] = 0
t = torch.tensor([0, 7, 19])
inputs = dict(text_embed=text_embed, text_encodings=enc)
fwd = inspect.signature(net.forward).parameters
if 'mask' in fwd: inputs['mask'] = (enc != 0).any(-1)        # <= 0.15.x took the padding mask explicitly
with torch.no_grad():
    expected = {'cond_scale_1': net(x, t, **inputs)}
    expected['cond_scale_3'] = net.forward_with_cond_scale(x, t, cond_scale=3., **inputs)
fixture = dict(release=release, net_kwargs=net_kwargs, prior_kwargs=prior_kwargs, x=x, t=t,
               text_embed=text_embed, text_encodings=enc, expected=expected)
torch.save(fixture, out / f'dalle2_{release}_expected.pt')
torch.save(prior.state_dict(), out / f'dalle2_{release}_prior.pth')   # how its users shared weights: a bare state dict
if release == '1.15.6':   # and a real trainer checkpoint, pickled objects included
    from dalle2_pytorch.trainer import DiffusionPriorTrainer
    from accelerate import Accelerator
    trainer = DiffusionPriorTrainer(prior, accelerator=Accelerator(cpu=True), lr=1e-3, wd=1e-2, warmup_steps=5, use_ema=True)
    for _ in range(3):
        trainer(text_embed=text_embed, image_embed=x / x.norm(dim=-1, keepdim=True), text_encodings=enc); trainer.update()
    trainer.save(str(out / 'dalle2_1.15.6_trainer.pt'))
print('wrote', release)
'''

def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for release in RELEASES:
        with tempfile.TemporaryDirectory() as site:
            subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', site, f'dalle2-pytorch=={release}'], check=True)
            subprocess.run([sys.executable, '-c', CHILD, release, str(OUT)], check=True, env={'PYTHONPATH': site, 'PATH': '/usr/bin:/bin'})
    print(json.dumps({p.name: p.stat().st_size for p in sorted(OUT.iterdir())}, indent=1))

if __name__ == '__main__': main()
