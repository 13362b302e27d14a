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

/// Cheap stand-in for the coverage-guided runs on stable: deterministic random mutations
/// (bit flips, byte sets, inserts, cuts, splices) of each target's corpus.
/// `EDGEWATCH_MUTATIONS` per target (default 1000).
#[test]
fn mutated_corpus_inputs_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let per_target: u64 = std::env::var("EDGEWATCH_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    for (name, target) in edgewatch::fuzzing::TARGETS {
        let seeds: Vec<Vec<u8>> = std::fs::read_dir(root.join(name))
            .expect("corpus dir")
            .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
            .collect();
        for _ in 0..per_target {
            let mut d = seeds[rnd(seeds.len())].clone();
            for _ in 0..1 + rnd(8) {
                let at = rnd(d.len() + 1);
                let last = at.min(d.len().saturating_sub(1));
                match rnd(6) {
                    0 if !d.is_empty() => d[last] ^= 1 << rnd(8),
                    1 if !d.is_empty() => {
                        d[last] = *b"{}[]\",:=\n\r 0-9.eE+#/\\\x00\xff"
                            .get(rnd(26))
                            .unwrap_or(&b'0')
                    }
                    2 => d.insert(at, rnd(256) as u8),
                    3 => d.truncate(at),
                    4 => {
                        let other = &seeds[rnd(seeds.len())];
                        let from = rnd(other.len() + 1);
                        d.splice(at..at, other[from..].iter().copied().take(rnd(64)));
                    }
                    _ => {
                        let n = rnd(d.len() + 1);
                        d.extend_from_within(..n);
                    }
                }
            }
            let r = std::panic::catch_unwind(|| target(&d));
            assert!(
                r.is_ok(),
                "target {name} panicked on {:?}",
                String::from_utf8_lossy(&d)
            );
        }
    }
}
