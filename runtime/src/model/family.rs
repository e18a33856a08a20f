//! Which family of kernels runs: the CPU's best, or a lower one forced with the
//! `EDGEBONE_KERNELS` environment variable, so that every path can be tested and
//! timed on any machine (an AVX-512 VNNI host runs the AVX2 kernels, a Pi 5 or
//! an A76 under qemu runs the Pi 4's).
//!
//! tract-linalg probes the instruction set once per process and lets features be
//! taken away before it does (its `TRACT_CPU_ISA` knob); a family here is such a
//! list. Everything edgebone computes itself is written for the baseline of each
//! architecture (auto-vectorized) or asks tract-linalg's answer, so the one
//! switch moves both.

use std::sync::OnceLock;

use tract_linalg::isa;

use crate::error::{Error, Result};

pub const ENV: &str = "EDGEBONE_KERNELS";

/// Family name, the architecture it applies to, and the features it removes.
const FAMILIES: &[(&str, &str, &str)] = &[
    // x86-64 without AVX-512 and VNNI: the AVX2 + FMA machines.
    (
        "avx2",
        "x86_64",
        "-avx512f,-avx512vnni,-avx512fp16,-avxvnni,-amx-int8,-amx-bf16",
    ),
    // aarch64 as a Cortex-A72 (Raspberry Pi 4): ARMv8.0 NEON, no dot product, no fp16.
    ("a72", "aarch64", "-dotprod,-fp16,-sve2,-sme,-sme2"),
];

/// Applies `EDGEBONE_KERNELS` before tract-linalg first looks at the CPU; later
/// calls return the first call's answer. Unset or `native`: the CPU's best.
pub fn init() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let wanted = std::env::var(ENV).unwrap_or_default();
        let removed = removed_by(wanted.trim())?;
        // Setting the knob hides tract's own environment variable: its edits go
        // after what HWCAP adds and before the family removes.
        let user = std::env::var("TRACT_CPU_ISA").unwrap_or_default();
        let spec = [missed_by_tract(), user, removed]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        if !spec.is_empty() {
            tract_linalg::knobs::TRACT_CPU_ISA.set(Some(spec));
        }
        Ok(())
    })
    .clone()
    .map_err(Error::Environment)
}

/// Features the kernel reports (HWCAP) that tract-linalg's probe misses: it looks
/// for fp16 in /proc/cpuinfo, which a container may not mount and which qemu-user
/// answers with the host's. The auxiliary vector is what the kernel (or qemu's
/// `-cpu`) says the core executes.
fn missed_by_tract() -> String {
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("fp16") {
        return "+fp16".into();
    }
    String::new()
}

/// The features family `wanted` takes away (TRACT_CPU_ISA's syntax).
fn removed_by(wanted: &str) -> std::result::Result<String, String> {
    if wanted.is_empty() || wanted == "native" {
        return Ok(String::new());
    }
    let arch = std::env::consts::ARCH;
    let known: Vec<&str> = FAMILIES
        .iter()
        .filter(|(_, a, _)| *a == arch)
        .map(|(name, ..)| *name)
        .collect();
    let Some((_, _, removed)) = FAMILIES.iter().find(|(n, a, _)| *n == wanted && *a == arch) else {
        return Err(format!(
            "{ENV}={wanted}: not a kernel family of {arch}; expected native{}",
            known.iter().map(|k| format!(" or {k}")).collect::<String>()
        ));
    };
    log::info!("{ENV}={wanted}: kernels as on a CPU without {removed}");
    Ok(removed.to_string())
}

/// True when the kernels may compute in half precision (ARMv8.2 FEAT_FP16:
/// Cortex-A76 in the Pi 5, A78AE in the Jetson Orin), after [`init`].
pub fn has_fp16() -> bool {
    isa::native().has(isa::Isa::Aarch64Fp16)
}

/// The instruction-set features the kernels use, as tract-linalg reports them
/// (e.g. `x86_64,avx,avx2,fma,f16c`), with the family forced, if any.
pub fn describe() -> String {
    let forced = std::env::var(ENV)
        .ok()
        .filter(|f| !f.is_empty() && f != "native");
    let features = format!("{:?}", isa::native());
    match forced {
        Some(f) => format!("{features} ({ENV}={f})"),
        None => features,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_family_is_refused_naming_the_choices() {
        let err = removed_by("pentium").unwrap_err();
        assert!(err.contains("EDGEBONE_KERNELS=pentium"), "{err}");
        assert!(err.contains("expected native"), "{err}");
    }
}
