//! How much key/value cache a batch may hold, and splitting a batch to fit.
//!
//! A policy batch's memory is nearly all cache, `layers * 2 * kv_heads * head_dim`
//! elements per position of a row: on the device a fixed set of row slots, each as
//! long as the batch's longest prompt plus its step budget; on the host caches that
//! grow each step (past and present side by side) and are rebuilt as rows finish.
//! The budget is a share of the memory free on the device once the model is loaded
//! (read from NVML on CUDA, `MemAvailable` on the CPU), or `TSST_KV_BUDGET_MB`.
use crate::device::Device;
use crate::manifest::{Decoder, Dtype};

/// Overrides the cache budget (MiB) of every model the process loads.
pub const BUDGET_ENV: &str = "TSST_KV_BUDGET_MB";
/// Share of the free memory at load a batch's caches may take: the rest is
/// activations, the other model on the same device and ONNX Runtime's arenas.
const FREE_SHARE_CUDA: f64 = 0.4;
const FREE_SHARE_CPU: f64 = 0.25;
/// Used when the free memory cannot be read.
const FALLBACK: u64 = 8 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvBudget {
    /// Bytes of cache per position of one row (all layers).
    pub per_position: u64,
    /// Bytes of cache a batch may hold at its peak.
    pub limit: u64,
}

impl KvBudget {
    /// The budget for a decoder on `device`, read now (call it after the model is
    /// loaded, so its weights are no longer free memory).
    pub fn for_decoder(decoder: &Decoder, dtype: Dtype, device: Device) -> KvBudget {
        let element = match dtype {
            Dtype::Float16 => 2,
            Dtype::Float32 => 4,
        };
        let per_position =
            (decoder.num_layers * 2 * decoder.num_kv_heads * decoder.head_dim) as u64 * element;
        let limit = match std::env::var(BUDGET_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(mb) => mb << 20,
            None => match free_bytes(device) {
                Some(free) => {
                    let share = if device.is_gpu() {
                        FREE_SHARE_CUDA
                    } else {
                        FREE_SHARE_CPU
                    };
                    (free as f64 * share) as u64
                }
                None => FALLBACK,
            },
        };
        KvBudget {
            per_position,
            limit,
        }
    }

    /// The peak cache bytes of a batch regrouped into `rows` rows of `width`
    /// positions, from old caches of `old` positions in all and fresh prompt caches of
    /// `prompts` positions, over caches that grow each step: a step writes a present
    /// one position longer beside its past, so the rows count twice.
    pub fn regroup_cost(&self, old: usize, prompts: usize, rows: usize, width: usize) -> u64 {
        (prompts + old.max(2 * rows * width)) as u64 * self.per_position
    }

    /// How many rows of `capacity` positions the budget holds, at least `least`.
    pub fn slots(&self, capacity: usize, least: usize) -> usize {
        let row = (capacity as u64 * self.per_position).max(1);
        ((self.limit / row) as usize).max(least)
    }
}

/// Whether an ONNX Runtime error says the device ran out of memory.
pub fn is_out_of_memory(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "out of memory",
        "failed to allocate memory",
        "alloc_failed",
        "cudaerrormemoryallocation",
        "bfcarena",
    ]
    .iter()
    .any(|s| m.contains(s))
}

/// Free memory of the device now: NVML's figure for a CUDA device, `MemAvailable`
/// for the CPU.
pub fn free_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cpu => mem_available(&std::fs::read_to_string("/proc/meminfo").ok()?),
        Device::Cuda(ordinal) => nvml::free(ordinal),
    }
}

fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// NVML, the driver's management library (wherever the driver is), read without a
/// CUDA context of our own.
mod nvml {
    use std::ffi::{c_int, c_uint, c_void};

    #[repr(C)]
    #[derive(Default)]
    struct Memory {
        total: u64,
        free: u64,
        used: u64,
    }

    /// The NVML index of CUDA device `ordinal`: `CUDA_VISIBLE_DEVICES` renumbers
    /// the devices a process sees.
    fn index(ordinal: u32) -> Option<u32> {
        match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .nth(ordinal as usize)
                .and_then(|d| d.trim().parse().ok()),
            _ => Some(ordinal),
        }
    }

    pub fn free(ordinal: u32) -> Option<u64> {
        let index = index(ordinal)?;
        // SAFETY: the symbols are NVML's documented C entry points with these
        // signatures; the library stays loaded while they are called.
        unsafe {
            let lib = libloading::Library::new("libnvidia-ml.so.1").ok()?;
            let init: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlInit_v2\0").ok()?;
            let handle_by_index: libloading::Symbol<
                unsafe extern "C" fn(c_uint, *mut *mut c_void) -> c_int,
            > = lib.get(b"nvmlDeviceGetHandleByIndex_v2\0").ok()?;
            let memory_info: libloading::Symbol<
                unsafe extern "C" fn(*mut c_void, *mut Memory) -> c_int,
            > = lib.get(b"nvmlDeviceGetMemoryInfo\0").ok()?;
            let shutdown: libloading::Symbol<unsafe extern "C" fn() -> c_int> =
                lib.get(b"nvmlShutdown\0").ok()?;
            if init() != 0 {
                return None;
            }
            let mut device = std::ptr::null_mut();
            let mut memory = Memory::default();
            let ok =
                handle_by_index(index, &mut device) == 0 && memory_info(device, &mut memory) == 0;
            shutdown();
            ok.then_some(memory.free)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_and_slots_follow_the_budget() {
        let b = KvBudget {
            per_position: 2,
            limit: 1000,
        };
        // 10 rows of 100 positions from 800 old ones and a 50-position prompt: the
        // rows twice (past and present), the prompt beside them.
        assert_eq!(b.regroup_cost(800, 50, 10, 100), 2 * (50 + 2000));
        assert_eq!(b.regroup_cost(3000, 0, 10, 100), 6000);
        // 1000 bytes hold 5 rows of 100 positions; never fewer than asked.
        assert_eq!(b.slots(100, 1), 5);
        assert_eq!(b.slots(1000, 3), 3);
    }

    #[test]
    fn out_of_memory_is_recognised() {
        assert!(is_out_of_memory(
            "Non-zero status code returned while running Gather node. Status Message: Failed to allocate memory for requested buffer of size 3435973836"
        ));
        assert!(is_out_of_memory(
            "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED"
        ));
        assert!(!is_out_of_memory("input `x` has the wrong shape"));
    }

    #[test]
    fn available_memory_is_read_from_meminfo() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(mem_available(text), Some(2048 * 1024));
    }
}
