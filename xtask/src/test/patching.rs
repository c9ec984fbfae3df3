//! The patching engine: the int3 promise, the naive oracle, the event path's machine code.

use std::path::Path;
use std::process::Command;

use super::harness::*;

/// The int3 promise: no torn execution, emulations seen on several CPUs, and
/// the traced timer interrupt handler reached from irq context.
pub(super) fn int3_promise(log: &str) -> std::result::Result<(), String> {
    let v = verdict(log)?;
    if v.torn != 0 {
        return Err("torn executions under int3".into());
    }
    // Every worker CPU calls traced functions all the time; the patching CPU
    // traps only when its own interrupt handlers hit a site in flight. So
    // "several CPUs" is required where there are at least two workers.
    let online = number_after(log, "smp: ").ok_or("no `smp: N CPUs online` line")?;
    let need = if online >= 3 { 2 } else { 1 };
    if v.cpus_with_int3 < need {
        return Err(format!("int3 emulations seen on {} CPU(s), expected at least {need} of {online}", v.cpus_with_int3));
    }
    if v.int3_emulated == 0 {
        return Err("no int3 emulation at all".into());
    }
    if v.calls[1] == 0 {
        return Err("no traced call from interrupt context".into());
    }
    Ok(())
}

/// Under naive, the oracle must have caught torn executions (and the kernel
/// kept running to print its verdict).
pub(super) fn naive_caught(log: &str) -> std::result::Result<(), String> {
    match verdict(log)?.torn {
        0 => Err("the oracle saw no torn execution under naive".into()),
        _ => Ok(()),
    }
}

/// The trace trampoline saves only XMM0-XMM15 (kernel/src/patch/site.rs):
/// sound only while no code in the image touches other vector state. The
/// built image is disassembled (objdump) and any x87, MMX or AVX
/// instruction, or any that reads or writes MXCSR or the x87 control word,
/// fails the test; FXSAVE/FXRSTOR may appear only in the trap entry.
pub(super) fn elf_vector_state_case(elf: &Path) -> std::result::Result<String, String> {
    let out = Command::new("objdump").args(["-d", "--no-show-raw-insn"]).arg(elf).output().map_err(|e| format!("objdump: {e} (install binutils)"))?;
    if !out.status.success() {
        return Err(format!("objdump failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut function, mut count, mut bad) = ("", 0usize, Vec::new());
    for line in text.lines() {
        if let Some(name) = objdump_function(line) {
            function = name;
            continue;
        }
        let Some(insn) = line.split('\t').nth(1) else { continue };
        count += 1;
        let mnemonic = insn.split_whitespace().next().unwrap_or("");
        let x87 = mnemonic.starts_with('f') && !mnemonic.starts_with("fxsave") && !mnemonic.starts_with("fxrstor");
        let restore = mnemonic.starts_with("fxrstor") || mnemonic.starts_with("xrstor") || mnemonic.starts_with("fxsave") || mnemonic.starts_with("xsave");
        let mxcsr = matches!(mnemonic, "ldmxcsr" | "stmxcsr" | "emms");
        let avx = mnemonic.starts_with('v') && !matches!(mnemonic, "verr" | "verw");
        let regs = insn.contains("%mm") || insn.contains("%st") || insn.contains("%ymm") || insn.contains("%zmm");
        if x87 || mxcsr || avx || regs || (restore && function != "trap_common") {
            bad.push(format!("{function}: {}", insn.trim()));
        }
    }
    if count < 100_000 {
        return Err(format!("only {count} instructions disassembled: not the kernel image?"));
    }
    if !bad.is_empty() {
        return Err(format!("vector state beyond XMM0-XMM15 in {} instructions (the trace trampoline would not restore it): {:?}", bad.len(), &bad[..bad.len().min(5)]));
    }
    let fast = event_fast_path_free_of_vectors(&text)?;
    let page = event_path_in_one_page(&text, fast.split(", "))?;
    Ok(format!("{count} instructions, none beyond SSE on XMM0-XMM15; the event fast path ({fast}) touches no vector register and lies, with the trampoline, in the page at {page:#x}"))
}

/// The event path shares one page (`.text.trace_hot` in `kernel/kernel.ld`:
/// under TCG a jump is chained only within a page): the trampoline
/// `trace_entry` and every function of the fast path (`fast`, as
/// `event_fast_path_free_of_vectors` found them). Returns the page.
pub(super) fn event_path_in_one_page<'a>(disassembly: &'a str, fast: impl Iterator<Item = &'a str>) -> std::result::Result<u64, String> {
    // Each function's first and last instruction address.
    let mut extent: std::collections::HashMap<&str, (u64, u64)> = std::collections::HashMap::new();
    let mut current = None;
    for line in disassembly.lines() {
        if let Some(name) = objdump_function(line) {
            current = Some(name);
            continue;
        }
        let addr = line.split('\t').next().and_then(|a| a.trim().strip_suffix(':')).and_then(|a| u64::from_str_radix(a, 16).ok());
        if let (Some(f), Some(a)) = (current, addr) {
            let e = extent.entry(f).or_insert((a, a));
            (e.0, e.1) = (e.0.min(a), e.1.max(a));
        }
    }
    let trampoline = extent.keys().copied().find(|n| n.contains("4site11trace_entry")).ok_or("no `kernel::patch::site::trace_entry` in the image")?;
    let page = extent[trampoline].0 >> 12;
    let outside: Vec<String> = std::iter::once(trampoline)
        .chain(fast)
        .filter_map(|f| match extent.get(f) {
            Some(&(start, end)) if start >> 12 == page && end >> 12 == page => None,
            Some(&(start, end)) => Some(format!("{f} at {start:#x}-{end:#x}")),
            None => Some(format!("{f}: not in the image")),
        })
        .collect();
    if !outside.is_empty() {
        return Err(format!("the event path leaves the trampoline's page {:#x} (put it in .text.trace_hot): {outside:?}", page << 12));
    }
    Ok(page << 12)
}

/// The function a line of `objdump -d` opens (`0000000000201000 <name>:`).
pub(super) fn objdump_function(line: &str) -> Option<&str> {
    line.strip_suffix(">:").and_then(|l| l.split_once(" <")).map(|(_, n)| n)
}

/// The event fast path runs with XMM0-XMM15 unsaved (`kernel::patch::site::
/// trace_entry`): `trace_hook_fast`, the event sink it calls through a
/// pointer (`appliance_record_function`), and every function they call or
/// jump to must hold no vector-register operand. Calls into the panic
/// machinery are not followed (a panic ends the run). Indirect calls: only
/// the sink's, one, in `trace_hook_fast`. Returns the functions checked.
pub(super) fn event_fast_path_free_of_vectors(disassembly: &str) -> std::result::Result<String, String> {
    const ROOTS: [&str; 2] = ["trace_hook_fast", "appliance_record_function"];
    const NORETURN: [&str; 9] = ["panicking", "unwrap_failed", "expect_failed", "slice_error_fail", "slice_index_fail", "begin_unwind", "alloc_error", "capacity_overflow", "handle_error"];
    let mut bodies: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
    let mut current: Option<&str> = None;
    for line in disassembly.lines() {
        if let Some(name) = objdump_function(line) {
            current = Some(name);
            bodies.entry(name).or_default();
            continue;
        }
        if let (Some(f), Some(insn)) = (current, line.split('\t').nth(1)) {
            bodies.entry(f).or_default().push(insn);
        }
    }
    let (mut seen, mut todo, mut problems) = (Vec::new(), ROOTS.map(String::from).to_vec(), Vec::new());
    while let Some(f) = todo.pop() {
        if seen.contains(&f) {
            continue;
        }
        let Some(body) = bodies.get(f.as_str()) else { return Err(format!("no function `{f}` in the image: the event fast path cannot be checked")) };
        let mut indirect = 0;
        for insn in body {
            if insn.contains("%xmm") || insn.contains("%ymm") || insn.contains("%zmm") || insn.contains("%mm") {
                problems.push(format!("{f}: {}", insn.trim()));
            }
            let mnemonic = insn.split_whitespace().next().unwrap_or("");
            if mnemonic.starts_with("call") || mnemonic.starts_with('j') {
                if insn.contains('*') {
                    indirect += 1;
                } else if let Some(target) = insn.split_once(" <").and_then(|(_, t)| t.split(['>', '+']).next())
                    && target != f
                    && !NORETURN.iter().any(|n| target.contains(n))
                {
                    todo.push(target.to_string());
                }
            }
        }
        let allowed = if f == "trace_hook_fast" { 1 } else { 0 };
        if indirect > allowed {
            problems.push(format!("{f}: {indirect} indirect call(s) or jump(s), whose targets cannot be checked"));
        }
        seen.push(f);
    }
    if !problems.is_empty() {
        return Err(format!("the event fast path, which runs with XMM0-XMM15 unsaved, touches vector registers or calls the unknown: {:?}", &problems[..problems.len().min(5)]));
    }
    Ok(seen.join(", "))
}
