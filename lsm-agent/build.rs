use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    compile_protos()?;
    build_bpf()?;
    rustc_version();
    Ok(())
}

/// `LSM_AGENT_RUSTC`, the compiler's version, for the `lsm_agent_build_info` metric. Cargo
/// reruns build scripts when the compiler changes, so this stays current.
fn rustc_version() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        // "rustc 1.95.0 (hash date)" -> "1.95.0"
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=LSM_AGENT_RUSTC={version}");
}

/// Generates the `tetragon` gRPC types and service code from `proto/tetragon/*.proto`.
/// protox parses the files in pure Rust so that no system `protoc` is needed.
fn compile_protos() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("proto");
    let files = [
        "events.proto",
        "sensors.proto",
        "tetragon.proto",
        "capabilities.proto",
    ]
    .map(|f| proto_root.join("tetragon").join(f));
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&proto_root]).context("parsing proto/tetragon/*.proto")?;
    // The descriptors themselves, for `tetragon::fieldfilter` (FieldMask paths need reflection).
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    fs::write(
        out_dir.join("tetragon_descriptors.bin"),
        prost::Message::encode_to_vec(&fds),
    )
    .context("writing the tetragon descriptor set")?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .context("generating gRPC code")
}

/// Builds `lsm-ebpf` for the BPF target and leaves the object at `$OUT_DIR/lsm-ebpf`, where
/// `bpf::EBPF_OBJECT` embeds it. With `AYA_BUILD_SKIP=1` (or without bpf-linker) an empty
/// file stands in, so the rest of the agent still builds and unit-tests without the BPF
/// toolchain; loading then fails with a clear "built without BPF" error.
fn build_bpf() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join("lsm-ebpf");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=PATH");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let have_linker = env::var_os("PATH")
        .is_some_and(|paths| env::split_paths(&paths).any(|d| d.join("bpf-linker").is_file()));
    if skip || !have_linker {
        if !skip {
            println!(
                "cargo:warning=bpf-linker not found: building lsm-agent WITHOUT BPF programs (run scripts/setup.sh)"
            );
        }
        fs::write(&object, b"").context("writing the empty BPF object stand-in")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    // aya-build watches lsm-ebpf only; the programs also compile in the ABI crate, and a
    // change there alone must not leave a stale object behind.
    let shared = manifest_dir.join("../shared").canonicalize()?;
    println!("cargo:rerun-if-changed={}", shared.display());
    let root = manifest_dir.join("../lsm-ebpf").canonicalize()?;
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    // Nightly builds `core` for the BPF target; without it, stable with RUSTC_BOOTSTRAP does.
    let nightly = std::process::Command::new("rustup")
        .args(["run", "nightly", "rustc", "-V"])
        .output()
        .is_ok_and(|o| o.status.success());
    let toolchain = if nightly {
        aya_build::Toolchain::Nightly
    } else {
        // SAFETY: build scripts are single-threaded; aya-build reads this to pass -Zbuild-std.
        unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
        aya_build::Toolchain::Custom("stable")
    };
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lsm-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        toolchain,
    )
    .context("building the BPF programs (is bpf-linker installed? run scripts/setup.sh)")
}
