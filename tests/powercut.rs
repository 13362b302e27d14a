//! Power cuts: edgewatch's data directory on a FUSE filesystem that loses everything not fsync'ed
//! (tests/powercut/fs.rs), the real binary cut at random moments, invariants checked every cycle.

#[path = "powercut/fs.rs"]
mod fs;

use std::io::Write;
use std::os::unix::fs::FileExt;

use fs::PowerCutFs;

/// Mounts a fresh filesystem, or says why this machine cannot (the test then passes).
fn mount() -> Option<(tempfile::TempDir, PowerCutFs)> {
    if let Err(why) = fs::can_mount() {
        eprintln!("powercut: skipped, FUSE cannot be mounted: {why}");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let fs = PowerCutFs::mount(dir.path()).expect("mount");
    Some((dir, fs))
}

#[test]
fn the_model_keeps_only_what_was_fsynced() {
    let Some((_dir, mut fs)) = mount() else {
        return;
    };
    let root = fs.path().to_path_buf();
    let sub = root.join("d");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::File::open(&root)
        .and_then(|d| d.sync_all())
        .expect("fsync root");
    // a: written, never synced (its name is, with d); b: synced, but its name is not; c: synced, name synced.
    std::fs::write(sub.join("a"), b"lost").expect("a");
    let mut b = std::fs::File::create(sub.join("b")).expect("b");
    b.write_all(b"data of b").expect("b");
    b.sync_all().expect("sync b");
    let mut c = std::fs::File::create(sub.join("c")).expect("c");
    c.write_all(b"data of c").expect("c");
    c.sync_all().expect("sync c");
    std::fs::File::open(&sub)
        .and_then(|d| d.sync_all())
        .expect("fsync d");
    // After the directory sync: more data for c (unsynced), and a rename (unsynced).
    c.write_all_at(b"XXXX", 0).expect("overwrite c");
    std::fs::rename(sub.join("c"), sub.join("c2")).expect("rename");
    drop((b, c));
    let r = fs.cut(None).expect("cut");
    assert!(r.unsynced_files.iter().any(|f| f == "c2"), "{r:?}");
    let names: Vec<String> = std::fs::read_dir(&sub)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a", "b", "c"], "the rename of c was not synced");
    assert_eq!(
        std::fs::read(sub.join("a")).expect("a"),
        b"",
        "a's name was synced (with d), its data never"
    );
    assert_eq!(std::fs::read(sub.join("b")).expect("b"), b"data of b");
    assert_eq!(std::fs::read(sub.join("c")).expect("c"), b"data of c");
    // A torn write keeps a prefix of the last unsynced write.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(sub.join("b"))
        .expect("open b");
    f.write_all_at(&[7u8; 1000], 9).expect("append");
    drop(f);
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(1);
    let r = fs.cut(Some(&mut rng)).expect("cut");
    let (_, kept, of) = r.torn.clone().expect("a torn write");
    assert_eq!(of, 1000);
    let b = std::fs::read(sub.join("b")).expect("b");
    assert_eq!(b.len(), 9 + kept, "{r:?}");
    assert!(b[9..].iter().all(|x| *x == 7));
}
