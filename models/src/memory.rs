//! How much key/value cache a batch may hold, and splitting a batch to fit.
//!
//! A policy batch's memory is nearly all cache: every sampled row holds its prompt
//! plus its step budget, `layers * 2 * kv_heads * head_dim` elements per position, and
//! for a moment (a fork, a compaction) the old and the new cache live side by side.
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
    /// Bytes of cache per position of one row.
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

    /// The peak cache bytes of requests decoded together, each `(prompt positions,
    /// step budget, samples)`: every prompt's prefill cache, then one row per sample,
    /// all as wide as the longest prompt plus the longest step, twice while a fork or
    /// a compaction copies them.
    pub fn cost(&self, requests: &[(usize, usize, usize)]) -> u64 {
        let prompts: usize = requests.iter().map(|r| r.0).sum();
        let rows: usize = requests.iter().map(|r| r.2).sum();
        let width = requests.iter().map(|r| r.0).max().unwrap_or(0)
            + requests.iter().map(|r| r.1).max().unwrap_or(0);
        (prompts + 2 * rows * width) as u64 * self.per_position
    }

    /// Splits requests (in order) into consecutive groups whose [`cost`](Self::cost)
    /// fits; a request larger than the whole budget goes alone.
    pub fn groups(&self, requests: &[(usize, usize, usize)]) -> Vec<std::ops::Range<usize>> {
        let mut groups = Vec::new();
        let mut start = 0;
        for i in 0..requests.len() {
            if i > start && self.cost(&requests[start..=i]) > self.limit {
                groups.push(start..i);
                start = i;
            }
        }
        if start < requests.len() {
            groups.push(start..requests.len());
        }
        groups
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
    fn groups_fit_the_budget_and_keep_the_order() {
        let b = KvBudget {
            per_position: 1,
            limit: 100,
        };
        // One request: a 10-position prompt, 5-token steps, 2 samples = 10 + 2*2*15.
        assert_eq!(b.cost(&[(10, 5, 2)]), 70);
        // Together they are as wide as the longest prompt plus the longest step.
        assert_eq!(b.cost(&[(10, 5, 1), (20, 1, 1)]), 30 + 2 * 2 * 25);
        let r = [(10, 5, 1), (10, 5, 1), (10, 5, 1), (40, 20, 2), (1, 1, 1)];
        assert_eq!(b.groups(&r), vec![0..2, 2..3, 3..4, 4..5]);
        assert!(b.groups(&r[..2]).len() == 1 && b.groups(&[]).is_empty());
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
