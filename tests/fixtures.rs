//! Nothing moves: 2-epoch CPU runs of the default VAE, the seed AE, a
//! denoising AE and the conv VAE on the embedded data give the tensor bytes
//! of `model.safetensors` and the losses recorded in
//! `tests/fixtures/cpu-2-epochs/` (rewritten when the products moved to the
//! AVX-512 kernels of `cpu::gemm`, which sum each element over K in one
//! chain of fused multiply-adds; before that, written by the binary of
//! commit 5915a7b; the conv VAE's again when its wide layers moved to the
//! implicit products of `cpu::implicit`, which sum a patch tap by tap, and
//! when its last layer's weight gradient went an image at a time). The file's header is left out: its metadata records the
//! run's position, which gained fingerprints of the settings and data since
//! (resume identity). The CPU path is bit-identical across thread counts
//! and, element-wise, across vector widths (no FMA contraction), so these
//! hold on any x86-64 machine with AVX-512; without it the products go
//! through matrixmultiply and the test says so and skips. A change that
//! moves them must say why and rewrite them (`GPU_VAE_WRITE_FIXTURES=1`).

use std::path::Path;

use assert_cmd::Command;
use sha2::{Digest, Sha256};

/// What a fixture holds: the SHA-256 of the model file's tensor bytes (all
/// after the header, in the file's order) and metrics.csv without the
/// timing columns.
fn summary(run: &Path) -> String {
    let model = std::fs::read(run.join("model.safetensors")).unwrap();
    let header = u64::from_le_bytes(model[..8].try_into().unwrap()) as usize;
    let hash: String = Sha256::digest(&model[8 + header..]).iter().map(|b| format!("{b:02x}")).collect();
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let kept = |line: &str| {
        let cells = line.split(',').zip(&header);
        let losses = cells.filter(|(_, h)| !matches!(**h, "seconds" | "samples_per_s" | "lr"));
        losses.map(|(c, _)| c).collect::<Vec<_>>().join(",")
    };
    let mut s = format!("model.safetensors tensors {hash}\n");
    metrics.lines().for_each(|l| s.push_str(&format!("{}\n", kept(l))));
    s
}

#[test]
fn cpu_runs_match_their_fixtures() {
    if !gpu_vae::advanced::cpu::gemm::available() {
        eprintln!("SKIPPED: the fixtures are the bits of the AVX-512 product kernels, and this CPU has no AVX-512");
        return;
    }
    let write = std::env::var("GPU_VAE_WRITE_FIXTURES").is_ok_and(|v| v == "1");
    let runs: [(&str, &[&str]); 4] = [
        ("vae", &[]),
        ("ae", &["--model", "ae"]),
        ("dae", &["--model", "ae", "--noise", "0.5"]),
        ("convvae", &["--arch", "conv"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cpu-2-epochs");
    let mut moved = Vec::new();
    for (name, args) in runs {
        let out = dir.path().join(name);
        Command::cargo_bin("gpu-vae")
            .unwrap()
            .args(["train", "--device", "cpu", "--epochs", "2", "--quiet", "--out"])
            .arg(&out)
            .args(args)
            .assert()
            .success();
        let got = summary(&out);
        if write {
            std::fs::write(fixtures.join(format!("{name}.txt")), &got).unwrap();
        }
        let want = std::fs::read_to_string(fixtures.join(format!("{name}.txt"))).unwrap();
        if got != want {
            moved.push(format!("{name}:\n  want\n{want}  got\n{got}"));
        }
    }
    assert!(moved.is_empty(), "CPU runs moved from their fixtures:\n{}", moved.join("\n"));
}
