//! Adds the libtorch rpath (exported by ibau-plugin's build script) so the fuzz binaries run
//! without `LD_LIBRARY_PATH`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_IBAU_TORCH_RPATH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_IBAU_TORCH_RPATH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
