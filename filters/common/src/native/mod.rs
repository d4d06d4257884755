//! The native build (`dist/libmeshware.so`): the suite on Envoy's dynamic
//! modules ABI. Envoy's hooks drive the same proxy-wasm root and HTTP
//! contexts the wasm build runs (`entry`), and the adapter's host calls are
//! implemented on the ABI (`hostcalls`): no core and no adapter logic
//! differs between the builds. What the ABI cannot express yet is listed in
//! docs/ARCHITECTURE.md ("The native build").

pub mod abi;
pub mod entry;
pub mod hostcalls;
mod logger;
mod refused;
mod store;

/// Exports a root context as a dynamic module:
/// `meshware_common::export_native!(|id| Box::new(SuiteRoot::new(id, CONCERNS)));`
#[macro_export]
macro_rules! export_native {
    ($factory:expr) => {
        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const u8 {
            $crate::native::entry::program_init($factory)
        }
    };
}
