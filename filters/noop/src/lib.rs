//! The benchmark's baseline wasm filter: a root and an HTTP context that
//! continue every callback. What it costs is the price of being a proxy-wasm
//! filter at all (VM per worker, one boundary crossing per callback).

#[cfg(target_os = "wasi")]
mod wasm {
    use proxy_wasm::traits::{Context, HttpContext, RootContext};
    use proxy_wasm::types::ContextType;

    struct Root;
    struct Stream;

    impl Context for Root {}
    impl Context for Stream {}
    impl HttpContext for Stream {}

    impl RootContext for Root {
        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Stream))
        }
        fn get_type(&self) -> Option<ContextType> {
            Some(ContextType::HttpContext)
        }
    }

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| Box::new(Root));
    }}
}
