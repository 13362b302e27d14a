//! Build script: embeds the build time (or SOURCE_DATE_EPOCH for reproducible builds) as
//! `EDGEWATCH_BUILD_UNIX_MS`, the earliest plausible wall-clock time for `clock.rs`.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let ms = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|s| s * 1000)
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
    println!("cargo:rustc-env=EDGEWATCH_BUILD_UNIX_MS={ms}");
}
