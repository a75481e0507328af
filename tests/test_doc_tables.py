"""The docs' results tables match their JSON, and the docs and bench/results/ cite each other:
every results file is cited, every cited results path exists (bench/doc_tables.py)."""

import doc_tables  # bench/ is on the tests' path (setup.cfg)


def test_every_doc_table_matches_its_json():
    problems = doc_tables.update(check=True)
    assert problems == [], "run `python bench/doc_tables.py`:\n" + "\n".join(problems)


def test_every_results_file_is_cited_in_the_docs():
    files = doc_tables.results_files()
    assert files, "bench/results/ is empty"
    uncited = doc_tables.unreferenced()
    assert uncited == [], ("cite these in README.md, docs/*.md or the model card, or remove them (git "
                           "history keeps them):\n" + "\n".join(uncited))


def test_every_cited_results_path_exists():
    missing = doc_tables.missing_citations()
    assert missing == [], ("cited but not in bench/results/ (cite an old file as `git show "
                           "REV:bench/results/...`):\n" + "\n".join(missing))


def test_the_check_names_a_block_that_no_longer_matches(tmp_path, monkeypatch):
    doc = tmp_path / "README.md"
    stale = "<!-- table: sim_throughput -->\n| stale |\n<!-- /table -->\n"
    doc.write_text("# x\n\n" + stale)
    monkeypatch.setattr(doc_tables, "REPO", tmp_path)
    monkeypatch.setattr(doc_tables, "figures", lambda path: {
        **{f"{w}_{c}_steps_per_s": 1000.0 for w in ("tabletop", "driving")
           for c in ("64x64", "64x64_seg", "320x240", "64x64_vec2")}, "command": "python bench/x.py"})
    problems = doc_tables.update(check=True)
    assert any("README.md: block 'sim_throughput' differs" in p for p in problems)
    assert doc.read_text().endswith(stale)  # --check changes nothing
    doc_tables.update(check=False)
    assert "| 64x64 RGB-D, one core | 1,000 | 1,000 |" in doc.read_text()
    assert not any("differs" in p for p in doc_tables.update(check=True))


#: The README is the front page: what it is, the two commands, a tour, the architecture, the
#: headline figures and links; everything else belongs in docs/.
README_MAX_LINES = 200


def test_readme_stays_a_front_page():
    readme = (doc_tables.REPO / "README.md").read_text().splitlines()
    assert len(readme) <= README_MAX_LINES, f"README.md has {len(readme)} lines; move detail to docs/"
    assert readme[3:5] == ["./setup.sh demo     # set up (apt libraries, .venv with pinned packages) and run "
                           "the simulation demo",
                           "./setup.sh test     # set up and run the whole test suite (what CI runs: .ci/run)"]


def test_links_between_the_docs_resolve():
    """Every relative markdown link in README.md and docs/*.md names a file that exists."""
    import re

    broken = []
    for doc in doc_tables.docs():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(doc_tables.REPO)}: {target}")
    assert broken == []


def test_the_readme_architecture_table_names_every_top_level_folder():
    """The folder tree and the README's architecture table agree."""
    readme = (doc_tables.REPO / "README.md").read_text()
    section = readme[readme.index("## Architecture"):readme.index("## Headline figures")]
    folders = sorted(p.name for p in doc_tables.REPO.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and p.name not in ("embodied_stack", "resource", "runs", "build", "install", "log")
                     and not p.name.endswith(".egg-info") and p.name != "__pycache__")
    missing = [f for f in folders if f"`{f}/`" not in section]
    assert missing == [], f"folders missing from README's architecture table: {missing}"
