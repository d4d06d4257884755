//! The `log` crate's records and the adapter's log lines, into Envoy's
//! `dynamic_modules` logger.

use super::abi;
use proxy_wasm::types::LogLevel;

struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = match record.level() {
            log::Level::Error => abi::log_level::ERROR,
            log::Level::Warn => abi::log_level::WARN,
            log::Level::Info => abi::log_level::INFO,
            log::Level::Debug => abi::log_level::DEBUG,
            log::Level::Trace => abi::log_level::TRACE,
        };
        write(level, &record.args().to_string());
    }

    fn flush(&self) {}
}

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Installs the logger at Envoy's level for dynamic modules.
pub fn install() {
    let _ = log::set_logger(&LOGGER);
    let filter = match level() {
        LogLevel::Trace => log::LevelFilter::Trace,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Error | LogLevel::Critical => log::LevelFilter::Error,
    };
    log::set_max_level(filter);
}

pub fn write(level: u32, message: &str) {
    // SAFETY: Envoy copies the message during the call.
    unsafe { abi::envoy_dynamic_module_callback_log(level, abi::Buffer::of(message.as_bytes())) };
}

/// The most detailed level Envoy logs for dynamic modules.
pub fn level() -> LogLevel {
    let levels = [
        (abi::log_level::TRACE, LogLevel::Trace),
        (abi::log_level::DEBUG, LogLevel::Debug),
        (abi::log_level::INFO, LogLevel::Info),
        (abi::log_level::WARN, LogLevel::Warn),
        (abi::log_level::ERROR, LogLevel::Error),
    ];
    for (abi_level, level) in levels {
        // SAFETY: a pure query of Envoy's logger.
        if unsafe { abi::envoy_dynamic_module_callback_log_enabled(abi_level) } {
            return level;
        }
    }
    LogLevel::Critical
}
