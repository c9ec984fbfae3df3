//! The event path in user space: every call of the site-on function went
//! through the kernel's trampoline into the ring, with the right site and a
//! parent inside the caller; the disabled site and the plain call recorded
//! nothing. (The figures themselves are `cargo xtask silicon -- --events`'s.)

#[test]
fn every_enabled_call_is_one_event_in_the_ring() {
    let (calls, reps) = (20_000, 2);
    let a = silicon::events::appliance(0, calls, reps);
    // Warm-up (a tenth) plus each repetition; only `site_on` reaches the hook.
    let want = calls / 10 + calls * reps as u64;
    assert_eq!(a.recorded, want, "calls that reached the hook");
    assert_eq!(a.ring_written, want, "events the ring was given");
    assert_eq!(a.last_ip, a.site, "the newest event names the measured site");
    assert_ne!(a.last_parent, 0, "the parent's return address was read through the frame pointer");
    assert!(a.event.median > 0.0 && a.no_site.median > 0.0);
    // The floor (RDTSC and the ring store alone) costs something, and its
    // ring is its own: the hook's count above is untouched by it.
    assert!(a.floor.median > 0.0 && a.event_over_floor.is_finite(), "floor {:?}", a.floor);
}
