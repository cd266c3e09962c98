"""The README's measured numbers against the files that measured them (tools/readme_numbers.py binds each to its source)."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
import readme_numbers as rn
from readme_from_index import render


def test_every_quoted_number_matches_its_source():
    assert rn.check(render()) == []


def test_a_changed_number_fails_naming_the_line_and_the_source():
    text = render()
    line = text[:text.index('| 1.66× |')].count('\n') + 1
    problems = rn.check(text.replace('| 1.66× |', '| 1.67× |'))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f'README line {line}, "| training | batch 256, eager:'), problems[0]
    assert "says 1.67 where bench/results/h200_seed_2026-11-28.json ['rows']['training, batch 256']['ratio'] gives 1.66" in problems[0]


def test_a_number_a_notebook_printed():
    q = next(q for q in rn.quotes() if q.phrase.startswith('"a circle" from the shipped demo prior'))
    want = [rn._fmt(v.get(), spec) for v, spec in q.numbers]
    text = render()
    stale = text.replace(f'is red in {want[0]}% of samples', 'is red in 21% of samples')
    assert stale != text
    problems = rn.check(stale)
    assert len(problems) == 1 and f"says 21 where nbs/19_arithmetic.ipynb stored output 'cond_scale 1', 'red' gives {want[0]}" in problems[0], problems


def test_a_source_that_lacks_the_number():
    q = rn.Quote('training steps {}× faster', (rn.js(rn.CPU, 'rows', 'training, batch 33', 'ratio'), '.2f'))
    problems = rn.check('training steps 1.61× faster', [q])
    assert problems == ["the README phrase \"training steps {}× faster\" has no source: bench/results/prior_cpu.json "
                        "['rows']['training, batch 33']['ratio']: KeyError: \"no 'training, batch 33'\""], problems


def test_a_phrase_that_is_gone():
    q = rn.Quote('({} vs a {} baseline)', (rn.demo('metrics', 'similarity_with_original_image'), '.3f'), (rn.demo('metrics', 'baseline_similarity'), '.3f'))
    assert rn.check('closer than the text embeddings are', [q]) == [
        'README no longer has the phrase "({} vs a {} baseline)" (its sources give 0.754, 0.610)']


def test_a_measurement_without_a_source():
    problems = rn.check(render() + '\nOn a laptop it samples 3.5× faster, in 12 s.\n')
    assert len(problems) == 2 and all('a measured-looking number that no quote' in p for p in problems), problems
    assert rn.check('Tested with Python 3.11 and torch 2.14.1; `cond_drop_prob=0.2` in code is a setting.', []) == []


def test_the_gpu_json_is_the_bench_output_it_was_converted_from():
    got = rn.bench_text_to_json(ROOT / 'bench/results/h200_seed_2026-11-28.txt')
    assert got == json.loads((ROOT / 'bench/results/h200_seed_2026-11-28.json').read_text())
    assert got['rows'][0] == dict(work='training, batch 256', ours='1,111 samples/s, peak 35.6 GiB (MFU 18%)',
                                  reference='669 samples/s, peak 55.8 GiB', ratio=1.66)
    assert got['agreement_cond_scale_2']['bf16 graph']['min_cos'] == 0.99934
