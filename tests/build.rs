//! Adds the libtorch rpath to the test binaries (ibau-plugin's build script exports it as
//! `DEP_IBAU_TORCH_RPATH_LIBTORCH_LIB`), so they run without `LD_LIBRARY_PATH`; keeps
//! libtorch_cuda linked so the GPU stays visible.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_IBAU_TORCH_RPATH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_IBAU_TORCH_RPATH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
