"""The book reads true: its cross-references name chapters that exist, and its stored outputs are clean text.

The rule for referring to a chapter, in prose and in code comments alike (notebook cells and README.md):

- by name: "the shapes chapter" (the part of the stem after the number, `16_shapes` -> shapes; "training" and
  "CLIP" also name `13_train` and `12_clip`), or by position from where the text stands ("the next chapter");
- or by stem: `16_shapes`, nbs/16_shapes.ipynb;
- never by bare number ("chapter 13", "chapters 13-15"): numbers shift when a chapter is inserted, and a stale number
  that still names an existing chapter reads as right.

A reference that hands a name over ("the metrics chapter's `ground_truth_report`", "`19_arithmetic`'s `prompt_walk`")
must point to a chapter whose source has that name.
"""
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT / 'nbs'
ALIASES = {'training': 'train'}                      # "the training chapter" is 13_train
POSITIONS = {'this': 0, 'previous': -1, 'next': 1}   # resolved from the chapter the text stands in
GENERIC = {'the', 'a', 'an', 'of', 'own', 'its', 'each', 'every', 'first', 'last', 'same', 'that', 'whole', 'one', 'in', 'which'}
NUMBERED = re.compile(r'\bchapters?\s+\d+(?:\s*[–-]\s*\d+)?', re.I)
STEM = re.compile(r'\b\d{2}_[A-Za-z]\w*')
NAMED = re.compile(r"\b([A-Za-z]+)\s+chapter\b")
HANDED = re.compile(r"(?:\b([A-Za-z]+)\s+chapter|(\d{2}_[A-Za-z]\w*)`?)'s\s+`([A-Za-z_]\w*)")


def cell_texts(path:Path)->list[str]:
    "Every cell's source of a notebook (markdown and code: comments and strings count)."
    return [''.join(c['source']) for c in json.loads(path.read_text())['cells']]


def book(nbs:Path=NBS)->dict[str, str]:
    "{stem: all its cells' sources} for the numbered chapters, in order."
    return {p.stem: '\n'.join(cell_texts(p)) for p in sorted(nbs.glob('[0-9][0-9]_*.ipynb'))}


def resolve(word:str, chapters:dict[str, str], here:str|None)->str|None:
    "The stem a chapter word names ('shapes', 'CLIP', 'next'), or None."
    word = word.lower()
    if word in POSITIONS:
        stems = list(chapters)
        if here not in stems: return None
        i = stems.index(here) + POSITIONS[word]
        return stems[i] if 0 <= i < len(stems) else None
    word = ALIASES.get(word, word)
    return next((s for s in chapters if s.split('_', 1)[1] in (word, word.rstrip('s'))), None)


def reference_problems(text:str, chapters:dict[str, str], here:str|None=None)->list[str]:
    "What in `text` breaks the rule above; `here` is the stem of the chapter the text stands in (None for README)."
    line = lambda m: text.count('\n', 0, m.start()) + 1
    problems = [f'line {line(m)}: {m.group(0)!r} is a bare number; write the chapter\'s name or stem' for m in NUMBERED.finditer(text)]
    problems += [f'line {line(m)}: {m.group(0)!r} is no chapter' for m in STEM.finditer(text) if m.group(0) not in chapters]
    for m in NAMED.finditer(text):
        word = m.group(1)
        if word.lower() in GENERIC or (word.lower() in POSITIONS and here is None): continue
        if resolve(word, chapters, here) is None:
            problems.append(f'line {line(m)}: ' + (f'no {word.lower()} chapter from {here}' if word.lower() in POSITIONS
                                                   else f'no chapter is called {word!r} ({m.group(0)!r})'))
    for m in HANDED.finditer(text):
        word, stem, name = m.groups()
        target = stem if stem else resolve(word, chapters, here) if word.lower() not in GENERIC else None
        if target in chapters and not re.search(rf'\b{re.escape(name)}\b', chapters[target]):
            problems.append(f'line {line(m)}: {m.group(0)!r}, but {target} has no {name!r}')
    return problems


def sources():
    "(label, text, stem of the chapter it stands in) for every cell of every notebook and for README.md."
    for path in sorted(NBS.glob('*.ipynb')):
        here = path.stem if re.match(r'\d{2}_', path.stem) else None
        for i, text in enumerate(cell_texts(path)): yield f'{path.name} cell {i}', text, here
    yield 'README.md', (ROOT / 'README.md').read_text(), None


FILES = sorted(p.name for p in NBS.glob('*.ipynb')) + ['README.md']


@pytest.mark.parametrize('name', FILES)
def test_chapter_references_name_chapters_that_exist(name):
    chapters = book()
    problems = [f'{label} {p}' for label, text, here in sources() if label.split(' cell ')[0] == name
                for p in reference_problems(text, chapters, here)]
    assert not problems, '\n'.join(problems)


def test_the_checker_catches_each_kind_of_stale_reference():
    chapters = {'11_metrics': 'def ground_truth_report(): ...', '12_clip': 'class ClipConfig: ...',
                '16_shapes': 'def shapes_clip(): ...', '19_arithmetic': 'def prompt_walk(): ...'}
    fine = ("The shapes chapter registers it; the metrics chapter's `ground_truth_report` reads it; see `19_arithmetic`, "
            "nbs/16_shapes.ipynb, the previous chapter's `ClipConfig` and this chapter.")
    check = lambda text, here=None: reference_problems(text, chapters, here)
    assert check(fine, '16_shapes') == []
    assert check('the shapes world of chapter 10') == ["line 1: 'chapter 10' is a bare number; write the chapter's name or stem"]
    assert check('see chapters 13–15')[0].startswith("line 1: 'chapters 13–15' is a bare")
    assert check('a\nsee `12_shapes`') == ["line 2: '12_shapes' is no chapter"]
    assert check('the explorer chapter') == ["line 1: no chapter is called 'explorer' ('explorer chapter')"]
    assert check("the metrics chapter's `prompt_walk`") == ["line 1: \"metrics chapter's `prompt_walk\", but 11_metrics has no 'prompt_walk'"]
    assert check("`12_clip`'s `prompt_walk`") == ["line 1: \"12_clip`'s `prompt_walk\", but 12_clip has no 'prompt_walk'"]
    assert check("the next chapter's `prompt_walk`", '12_clip') == [
        "line 1: \"next chapter's `prompt_walk\", but 16_shapes has no 'prompt_walk'"]
    assert check("the next chapter's `prompt_walk`", '19_arithmetic') == ['line 1: no next chapter from 19_arithmetic']


ESCAPE = re.compile('\x1b')   # ESC starts every terminal control sequence (colours, clear-line)


def escapes_in(nb:dict)->list[str]:
    "The cells of a notebook (its JSON) whose stored outputs hold terminal escape codes."
    found = []
    for i, cell in enumerate(nb['cells']):
        for out in cell.get('outputs', []):
            texts = [out.get('text', '')] + [v for k, v in out.get('data', {}).items() if k.startswith('text/')]
            if any(ESCAPE.search(''.join(t) if isinstance(t, list) else t) for t in texts): found.append(f'cell {i}')
    return found


def test_escapes_are_found():
    cell = lambda text: dict(cell_type='code', source='', outputs=[dict(output_type='stream', name='stdout', text=text)])
    nb = dict(cells=[cell(['plain\n']), cell(['\x1b[2K\rprogress 10%\n']), dict(cell_type='markdown', source='\x1b[31m')])
    assert escapes_in(nb) == ['cell 1']     # outputs only: a cell's source may well mention the codes it strips


@pytest.mark.parametrize('name', sorted(p.name for p in NBS.glob('*.ipynb')))
def test_stored_outputs_hold_no_terminal_escapes(name):
    found = escapes_in(json.loads((NBS / name).read_text()))
    assert not found, f'{name}: terminal escape codes in the stored output of ' + ', '.join(found)
