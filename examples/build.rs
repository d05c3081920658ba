//! Compiles `proto/echo.proto` with the `protoc` that `protoc-bin-vendored` ships: nothing to
//! install by hand.
//!
//! The path is handed to prost's `Config::protoc_executable`, which is what setting `PROTOC`
//! would do, without `std::env::set_var` (unsafe in edition 2024, and this workspace forbids
//! unsafe code).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto/echo.proto");
    tonic_prost_build::configure().compile_with_config(
        config,
        &["proto/echo.proto"],
        &["proto"],
    )?;
    Ok(())
}
