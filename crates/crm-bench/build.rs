//! Compiles the echo baseline's proto (pure Rust, no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", dir.display());
    let fds = protox::compile([dir.join("echo.proto")], [&dir])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
