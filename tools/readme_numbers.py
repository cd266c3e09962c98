"""The measured numbers README.md quotes, each bound to the file that measured it.

A quote is a phrase of the README with `{}` where numbers stand and, for each number, the file it comes from (a JSON a
bench script or run wrote, a notebook's stored output found by its label, a file's size) and its format. `check(text)`
formats every source value and returns one message per quote whose text says something else, whose phrase is gone or
whose source lacks the value; it also flags measured-looking numbers (a %, a ×, a rate, a size, seconds, a decimal)
that no quote covers. `python tools/readme_from_index.py --check` runs it on the README the notebook renders.

    python tools/readme_numbers.py                   # check README.md
    python tools/readme_numbers.py --bench_text bench/results/h200_seed_2026-11-28.txt   # that output as bench JSON
"""
import json, re, statistics, sys
from pathlib import Path
from prior_nbdev.lab.truth import Method, TEXT

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r'-?\d[\d,]*(?:\.\d+)?'


def _missing(k): raise KeyError(f'no {k!r}')


class Value:
    "A number read from a file: `get()` reads it (raising when the file lacks it); `where` says from where."
    def __init__(self, where, get): self.where, self.get = where, get


def _in_text(text, k):
    "In a string: the k-th number (int k) or the number right after the words k (str k)."
    found, i = (re.findall(NUMBER, text), k) if isinstance(k, int) else (re.findall(re.escape(k) + rf'\s*({NUMBER})', text), 0)
    if len(found) <= i: raise KeyError(f'{text[:60]!r} has no number {k!r}')
    return float(found[i].replace(',', ''))


def _row(rows, k):
    "In a list of rows: the one whose 'work' is k (a string), or the first with all of k's fields (a dict)."
    want = k if isinstance(k, dict) else dict(work=k)
    return next((r for r in rows if all(r.get(f) == v for f, v in want.items())), None) or _missing(k)


def js(file, *keys, reduce=None):
    "A number in a JSON file at `keys` (dict keys, rows of a list, numbers in a string); `reduce` (min, max) folds a dict's values."
    def get():
        data = json.loads((ROOT / file).read_text())
        for k in keys:
            if isinstance(data, list): data = _row(data, k)
            elif isinstance(data, str): data = _in_text(data, k)
            elif isinstance(data, dict) and k in data: data = data[k]
            else: _missing(k)
        return float(reduce(data.values()) if reduce else data)
    return Value(f'{file} ' + ''.join(f'[{k!r}]' for k in keys) + (f' ({reduce.__name__})' if reduce else ''), get)


def nb(file, label, field):
    "A number a notebook printed: in its stored outputs, on the line that starts with `label`, the number after `field`."
    def get():
        outputs = '\n'.join(''.join(o.get('text', '')) for c in json.loads((ROOT / file).read_text())['cells'] for o in c.get('outputs', []))
        m = re.search(rf'^{re.escape(label)}\s.*?\b{re.escape(field)}\s+({NUMBER})', outputs, re.M) or _missing(f'{label} ... {field}')
        return float(m.group(1))
    return Value(f'{file} stored output {label!r}, {field!r}', get)


def size_mb(file): return Value(f'size of {file} (MB)', lambda: (ROOT / file).stat().st_size / 1e6)


def of(fn, *values):
    "A number computed from others (fn: min, max, statistics.mean)."
    return Value(f'{fn.__name__} of (' + '; '.join(v.where for v in values) + ')', lambda: fn([v.get() for v in values]))


class Quote:
    "A README phrase with {} per number, and per number (Value, format spec or function)."
    def __init__(self, phrase, *numbers): self.phrase, self.numbers = phrase, numbers

    def pattern(self):
        "The phrase as a regex: any whitespace where it has a space, a number where it has {}."
        return f'({NUMBER})'.join(r'\s+'.join(map(re.escape, p.split(' '))) for p in self.phrase.split('{}'))


pct = lambda x: f'{100 * x:.1f}'     # a share as a percentage, one decimal
pct0 = lambda x: f'{100 * x:.0f}'

CPU, GPU = 'bench/results/prior_cpu.json', 'bench/results/h200_seed_2026-11-28.json'
DEMO, SEEDS, STEPS = 'bench/ablation_demo.json', 'bench/seeds_demo.json', 'bench/results/sampler_steps.json'
ARITH, SAMPLE = 'nbs/19_arithmetic.ipynb', 'nbs/14_sample.ipynb'
P1, P2 = Method.prior(1, 1.), Method.prior(2, 1.)
DEMO_RUNS = [(DEMO, 'demo defaults'), (SEEDS, 'demo defaults (seed 1)'), (SEEDS, 'demo defaults (seed 2)')]


def demo(*keys, reduce=None): return js(DEMO, 'demo defaults', *keys, reduce=reduce)
def cpu(work, side, n=0): return js(CPU, 'rows', work, side, *([] if side == 'ratio' else [n]))
def gpu(work, side, n=0): return js(GPU, 'rows', work, side, *([] if side == 'ratio' else [n]))
def arith(label, field): return nb(ARITH, label, field)


def quotes():
    "Every measured number the README quotes, with its source."
    Q, cpu_s, gpu_s = Quote, 'sampling, DDIM 64 steps, batch 32, cond_scale ', 'sampling, DDIM 64 steps, batch '
    cpu_ratios = [cpu(cpu_s + '1', 'ratio'), cpu(cpu_s + '2', 'ratio')]
    train, compiled = 'training, batch 256', 'training, batch 256, torch.compile'
    agreement = [js(GPU, f'agreement_cond_scale_{s}', k, 'min_cos') for s in (1, 2) for k in ('bf16 eager', 'bf16 graph')]
    best_of_2 = [js(STEPS, 'rows', dict(sampler='ddim_dalle2', steps=16, candidates=2, seed=s), 'diversity', 'count') for s in range(3)]
    return [
        Q('samples {}–{}× faster on a CPU', (of(min, *cpu_ratios), '.0f'), (of(max, *cpu_ratios), '.0f')),
        # the demo (bench/ablate_demo.py wrote both JSON files)
        Q("open_clip's own model class, {} MB", (size_mb('prior_nbdev/lab/assets/shapes_clip.safetensors'), '.1f')),
        Q('On 2 CPU cores it takes {} s (measured alone)', (demo('seconds'), '.0f')),
        Q('({} vs a {} baseline)', (demo('metrics', 'similarity_with_original_image'), '.3f'), (demo('metrics', 'baseline_similarity'), '.3f')),
        Q("held-out caption {} of what they read from the caption's own picture ({} on the mean of three training seeds; {} with "
          'best-of-2; the raw text embedding: {})', (demo('methods', P1, 'fidelity_vs_ceiling'), '.3f'),
          (of(statistics.mean, *[js(f, r, 'methods', P1, 'fidelity_vs_ceiling') for f, r in DEMO_RUNS]), '.3f'),
          (demo('methods', P2, 'fidelity_vs_ceiling'), '.2f'),
          (demo('methods', TEXT, 'fidelity_vs_ceiling'), '.2f')),
        Q('({} to {} of its entropy on this run; the lowest label {} to {} over three seeds)',
          (demo('methods', P1, 'diversity', reduce=min), '.2f'), (demo('methods', P1, 'diversity', reduce=max), '.2f'),
          (of(min, *[js(f, r, 'methods', P1, 'diversity', reduce=min) for f, r in DEMO_RUNS]), '.2f'),
          (of(max, *[js(f, r, 'methods', P1, 'diversity', reduce=min) for f, r in DEMO_RUNS]), '.2f')),
        # negative prompts (nbs/19_arithmetic.ipynb)
        Q('"a circle" from the shipped demo prior is red in {}% of samples without guidance and {}% with guidance alone at '
          '`cond_scale` 1.5; with the negative prompt "red" at the same scale, {}%, and still {}% circles (a negative "blue" '
          'leaves {}% red, and blue falls from {}% to {}%)',
          (arith('cond_scale 1', 'red'), pct), (arith('cond_scale 1.5', 'red'), pct), (arith('cond_scale 1.5, negative "red"', 'red'), pct),
          (arith('cond_scale 1.5, negative "red"', 'circles'), pct0), (arith('cond_scale 1.5, negative "blue"', 'red'), pct),
          (arith('cond_scale 1.5', 'blue'), pct), (arith('cond_scale 1.5, negative "blue"', 'blue'), pct)),
        # the sampling command
        Q("the written embeddings lie at cosine {} from their own pictures' image embeddings, the raw text embeddings at {}",
          (nb(SAMPLE, 'prediction vs own picture', 'mean'), '.3f'), (nb(SAMPLE, 'text embedding vs own picture', 'mean'), '.3f')),
        Q("cuts the count's variety (one shape or two) to {} of the data's", (of(statistics.mean, *best_of_2), '.2f')),
        # speed on a CPU
        Q('sampling at 64 DDIM steps {} embeddings/s against the reference\'s {} at cond_scale 1 ({}×) and {} against {} at '
          'cond_scale 2 ({}×); a training step {}× faster ({} against {} samples/s)',
          (cpu(cpu_s + '1', 'ours'), '.1f'), (cpu(cpu_s + '1', 'reference'), '.1f'), (cpu_ratios[0], '.1f'),
          (cpu(cpu_s + '2', 'ours'), '.1f'), (cpu(cpu_s + '2', 'reference'), '.1f'), (cpu_ratios[1], '.1f'),
          (cpu('training, batch 32', 'ratio'), '.2f'), (cpu('training, batch 32', 'ours'), '.0f'), (cpu('training, batch 32', 'reference'), '.0f')),
        # speed on a GPU (bench/results/h200_seed_2026-11-28.txt, as JSON)
        Q('77 text tokens, {}M parameters', (js(GPU, 'header', 'config seed:'), '.0f')),
        Q('matmul peak measured in the same run {} TFLOP/s', (js(GPU, 'header', 'matmul peak'), '.0f')),
        Q('| training | batch 256, eager: {} samples/s, {} GiB (MFU {}%) | batch 256, eager: {} samples/s, {} GiB | {}× |',
          (gpu(train, 'ours', 0), ',.0f'), (gpu(train, 'ours', 1), '.1f'), (gpu(train, 'ours', 2), '.0f'),
          (gpu(train, 'reference', 0), ',.0f'), (gpu(train, 'reference', 1), '.1f'), (gpu(train, 'ratio'), '.2f')),
        Q('| training | batch 256, `prior.compile()`: {} samples/s, {} GiB (MFU {}%; compiling: {} s) | batch 256, eager: {} samples/s | '
          '{}× (compiled vs eager) |', (gpu(compiled, 'ours', 0), ',.0f'), (gpu(compiled, 'ours', 1), '.1f'), (gpu(compiled, 'ours', 2), '.0f'),
          (gpu(compiled, 'ours', 3), '.0f'), (gpu(compiled, 'reference', 0), ',.0f'), (gpu(compiled, 'ratio'), '.2f')),
        Q('| training | batch 1024, eager: {} samples/s, {} GiB |', (gpu('training, batch 1024', 'ours', 0), ',.0f'),
          (gpu('training, batch 1024', 'ours', 1), '.0f')),
        *[Q(f'| {work} | batch {b}, {"CUDA graph" if graph else "eager"}: {{}} embeddings/s | batch 256, eager: {{}} embeddings/s | {{}}× |',
            *[(gpu(f'{gpu_s}{b}, cond_scale {s}' + (', CUDA graph' if graph else ''), side), spec) for side, spec in
              (('ours', '.0f'), ('reference', '.1f'), ('ratio', '.2f'))])
          for work, s, b, graph in (('sampling, 64 DDIM steps, cond_scale 1', 1, 256, False), ('same', 1, 256, True), ('same', 1, 4096, True),
                                    ('sampling, 64 DDIM steps, cond_scale 2', 2, 256, False), ('same', 2, 256, True), ('same', 2, 4096, True))],
        Q('bf16 (graph or not) within cosine {} of every row', (of(min, *agreement), '.4f')),
    ]


# words around a number that make it a setting, a version or a name rather than a measurement
NOT_MEASURED = ('Python 3.11', 'License 2.0', 'arXiv:2204.06125', 'torch ≥ 1.6', 'torch < 0.4')
UNITS = r'%|×|x\b|s\b|GiB|MB|TFLOP/s|minutes|embeddings/s|samples/s'
MEASURED = re.compile(rf'(?<![\w.])(?:\d[\d,]*\.\d+(?![\d.])|\d[\d,]*(?=\s?(?:{UNITS})))')   # a decimal, or a number with a unit


def _line(text, pos): return text.count('\n', 0, pos) + 1


def unbound(text, spans):
    "Measured-looking numbers outside code, outside every quote's span and not in NOT_MEASURED: (line, text around it)."
    masked = re.sub(r'```.*?```|`[^`\n]*`', lambda m: ' ' * len(m.group()), text, flags=re.S)   # code: settings, not measurements
    for words in NOT_MEASURED: masked = masked.replace(words, ' ' * len(words))
    out = []
    for m in MEASURED.finditer(masked):
        if re.match(r'\d+\.\d+\.\d', masked[m.start():]) or any(a <= m.start() < b for a, b in spans): continue
        out.append((_line(text, m.start()), masked[max(0, m.start() - 30):m.end() + 10].replace('\n', ' ')))
    return out


def check(text, bound=None):
    "Messages, one per README number that is not what its source says (empty: every quoted number holds)."
    problems, spans = [], []
    for q in quotes() if bound is None else bound:
        found = list(re.finditer(q.pattern(), text))
        spans += [m.span() for m in found]
        errors = [f'{v.where}: {type(e).__name__}: {e}' for v, _ in q.numbers for e in [_error(v)] if e]
        if errors: problems.append(f'the README phrase "{q.phrase}" has no source: ' + '; '.join(errors)); continue
        want = [_fmt(v.get(), spec) for v, spec in q.numbers]
        if not found: problems.append(f'README no longer has the phrase "{q.phrase}" (its sources give {", ".join(want)})')
        elif not any(list(m.groups()) == want for m in found):
            m = found[0]
            problems.append(f'README line {_line(text, m.start())}, "{q.phrase}": ' + '; '.join(
                f'says {got} where {v.where} gives {w}' for got, w, (v, _) in zip(m.groups(), want, q.numbers) if got != w))
    return problems + [f'README line {n}: a measured-looking number that no quote in tools/readme_numbers.py binds to a source: "...{what}..."'
                       for n, what in unbound(text, spans)]


def _error(value):
    "What reading `value` raises (a missing file, key or output line), or None."
    try: value.get()
    except (OSError, KeyError, ValueError, TypeError) as e: return e


def _fmt(x, spec): return spec(x) if callable(spec) else format(x, spec)


def bench_text_to_json(path):
    "bench/bench_prior.py's printed output (its first block of rows and its agreement lines) as the JSON its --json writes."
    lines = Path(path).read_text().splitlines()
    record = dict(header=lines[0], rows=[], notes=[f'converted from {Path(path).name} by tools/readme_numbers.py --bench_text'])
    for line in lines[2:lines.index('', 2)]:
        if line.startswith('agreement with the fp32 path, cond_scale '):
            scale, rest = line.removeprefix('agreement with the fp32 path, cond_scale ').split(': ', 1)
            record[f'agreement_cond_scale_{scale}'] = {
                name.strip(): dict(max_abs=float(m[0]), median_cos=float(m[1]), min_cos=float(m[2]))
                for name, *m in re.findall(r'([\w ]+): max \|d\| (\S+), cosine median (\S+), min ([\d.]+)', rest)}
        else:
            work, ours, reference, ratio = line.split(' | ')
            record['rows'].append(dict(work=work, ours=ours, reference=reference, ratio=None if ratio == 'n/a' else float(ratio.rstrip('x'))))
    return record


if __name__ == '__main__':
    if sys.argv[1:2] == ['--bench_text']:
        src = Path(sys.argv[2]); dst = src.with_suffix('.json')
        dst.write_text(json.dumps(bench_text_to_json(src), indent=1) + '\n'); print(f'wrote {dst}')
    else:
        problems = check((ROOT / 'README.md').read_text(encoding='utf-8'))
        print('\n'.join(problems) or 'every measured number in README.md matches its source')
        sys.exit(1 if problems else 0)
