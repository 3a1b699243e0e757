//! The one place that chooses where tensors live.

use crate::config::DeviceChoice;
use crate::error::{Error, Result};

/// Resolve `--device` / `run.device` to a libtorch device.
pub(crate) fn choose(choice: DeviceChoice) -> Result<tch::Device> {
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
        DeviceChoice::Cuda => Err(Error::Config(
            "--device cuda asked for, but libtorch sees no CUDA device (is this the CPU libtorch? see README, 'Running on a GPU')".into(),
        )),
    }
}

/// Seed libtorch and set its CPU threads, for reproducible runs.
pub(crate) fn init(seed: u64, threads: usize) {
    tch::manual_seed(seed as i64);
    tch::set_num_threads(threads.max(1) as i32);
}

/// libtorch's random generator is global to the process: tests that seed
/// it and draw from it take this lock so that parallel tests cannot
/// interleave their draws.
#[cfg(test)]
pub(crate) fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
