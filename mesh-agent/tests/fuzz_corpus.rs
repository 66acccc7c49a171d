//! Replays every fuzz corpus and regression input (`fuzz/corpus/<target>`,
//! `fuzz/regressions/<target>`) through the fuzz targets' bodies: what once crashed
//! stays fixed, without running a fuzzer (that is `cargo xtask fuzz`).
use std::path::Path;

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for (name, target) in mesh_agent::fuzzing::TARGETS {
        let mut inputs = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(rd) = std::fs::read_dir(fuzz.join(dir).join(name)) else {
                continue;
            };
            for e in rd.flatten() {
                let path = e.path();
                if path.file_name().is_some_and(|n| n == ".gitkeep") {
                    continue;
                }
                let data = std::fs::read(&path).expect("input");
                let run = std::panic::catch_unwind(|| target(&data));
                assert!(run.is_ok(), "{name}: {} fails its target", path.display());
                inputs += 1;
            }
        }
        assert!(inputs > 0, "{name}: no corpus under {}", fuzz.display());
        replayed += inputs;
    }
    eprintln!("replayed {replayed} fuzz inputs");
}
