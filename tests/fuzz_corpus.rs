//! Replays every fuzz corpus file (`fuzz/corpus/<target>/*`, seeds and what fuzzing kept) through
//! its target under stable `cargo test`, so a crash once found stays fixed without a nightly.

use std::path::Path;

#[test]
fn every_corpus_input_runs_through_its_target_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, target) in edgewatch::fuzzing::TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target keeps seeds)", dir.display()));
        let mut n = 0;
        for e in entries {
            let path = e.expect("entry").path();
            let data = std::fs::read(&path).expect("read corpus file");
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "target {name} panicked on {}", path.display());
            n += 1;
        }
        assert!(n > 0, "no corpus for target {name}");
        total += n;
    }
    assert!(total >= edgewatch::fuzzing::TARGETS.len());
}

#[test]
fn every_fuzz_target_file_has_an_entry_point_and_the_reverse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets")
        .filter_map(|e| {
            let p = e.ok()?.path();
            Some(p.file_stem()?.to_str()?.to_string())
        })
        .collect();
    files.sort();
    let mut names: Vec<String> = edgewatch::fuzzing::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(files, names);
}
