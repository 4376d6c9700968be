//! Helpers shared by the tests that link the C library.

use std::path::PathBuf;

/// The static library cargo built beside this test: `target/<profile>/` when the package
/// is built alone, `target/<profile>/deps/` only after a workspace-wide build (cargo then
/// does not always uplift it).
pub fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    [profile.to_path_buf(), profile.join("deps")]
        .map(|d| d.join("libadpq_capi.a"))
        .into_iter()
        .find(|a| a.is_file())
        .unwrap_or_else(|| {
            panic!(
                "libadpq_capi.a missing in {}[/deps]: cargo builds it with the lib",
                profile.display()
            )
        })
}
