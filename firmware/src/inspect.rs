//! `edgebone inspect`: what a model holds, in PyTorch's `named_parameters()` terms.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use edgebone::Bundle;
use edgebone::inspect::{Port, inspect};

pub fn run(model: &Path) -> Result<ExitCode> {
    let (network, bundle) = if model.is_dir() {
        let bundle = Bundle::open(model)?;
        (bundle.network_path(), Some(bundle))
    } else {
        (model.to_path_buf(), None)
    };
    let info = inspect(&network)?;
    // Written through a locked handle so a closed pipe (`| head`) ends the command
    // with an error instead of a panic.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(out, "parameters of {}:", network.display())?;
    let width = info
        .parameters
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    for p in &info.parameters {
        writeln!(
            out,
            "  {:width$}  {:<20} {:<8} {:>10}",
            p.name,
            format!("{:?}", p.shape),
            p.dtype,
            p.numel()
        )?;
    }
    writeln!(
        out,
        "total: {} parameters in {} tensors",
        info.total_parameters(),
        info.parameters.len()
    )?;
    write_ports(&mut out, "inputs", &info.inputs)?;
    write_ports(&mut out, "outputs", &info.outputs)?;
    if let Some(bundle) = bundle {
        writeln!(out, "taps:")?;
        for tap in &bundle.manifest.taps {
            writeln!(
                out,
                "  {} stride {}  ({})",
                tap.name, tap.stride, tap.tensor
            )?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_ports(out: &mut impl Write, title: &str, ports: &[Port]) -> std::io::Result<()> {
    writeln!(out, "{title}:")?;
    for port in ports {
        writeln!(
            out,
            "  {} {} [{}]",
            port.name,
            port.dtype,
            port.shape.join(", ")
        )?;
    }
    Ok(())
}
