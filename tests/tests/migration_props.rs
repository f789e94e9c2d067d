//! Property test of the migration logic against the simulated world (`skyvine_tests::sim`):
//! random sequences of VM moves (announced by RARP, gratuitous ARP or not at all; by guests
//! that answer probes, or that stay mute so that an optimistic takeover is rolled back; and
//! announcements where the VM is not), control
//! messages delivered one at a time in any order, duplicated or lost, routers restarted with
//! nothing learnt, and connections cut and healed. Once every link is back, time has passed
//! and every VM has spoken on its LAN, the routers must agree with where the VMs really are:
//! one owner per address, the LNDT of that site alone holding it, every kernel view exactly
//! what that placement calls for, and one table digest. (Quinn's `random_interaction` tests
//! and firezone's reference state machine test drive their state machines the same way.)
//!
//! `PROPTEST_CASES` is proptest's usual knob; failures shrink to a short sequence, which
//! proptest stores in `migration_props.proptest-regressions` and replays first from then on.

use std::time::Duration;

use proptest::prelude::*;
use skyvine_core::node::{Takeover, DIGEST_INTERVAL};
use skyvine_tests::sim::{Announce, Delivery, World};

const SITES: [&str; 4] = ["a", "b", "c", "d"];
/// Two VMs per site.
const VMS: usize = 2 * SITES.len();
/// The world the regression cases below were found in (their picks are taken modulo the
/// number of messages in flight, which depends on the number of sites).
const THREE_SITES: [&str; 3] = ["a", "b", "c"];
/// How long a still-here take-back freezes an address in these worlds: short, so that the
/// end of a case can wait it out and the VMs' last word counts.
const FREEZE: Duration = Duration::from_secs(10);

/// One thing that happens to the world.
#[derive(Clone, Debug)]
enum Step {
    /// VM `vm` live-migrates to site `to` (possibly where it already is).
    Move {
        vm: usize,
        to: usize,
        announce: Announce,
    },
    /// The message at `pick` among those in flight arrives.
    Deliver { pick: usize },
    /// The message at `pick` arrives, and a copy of it stays in flight.
    Duplicate { pick: usize },
    /// The message at `pick` is lost.
    Lose { pick: usize },
    /// Everything in flight arrives, in order, until the routers are quiet.
    Settle,
    /// Time passes: probes, timeouts and digests fire (their messages queue).
    Wait { ms: u64 },
    /// VM `vm` says something on its LAN (an ARP request for its home gateway).
    Speak { vm: usize },
    /// A router restarts with nothing learnt.
    Restart { site: usize },
    /// The connection between two routers goes down.
    Partition { a: usize, b: usize },
    /// Every cut connection comes back.
    Heal,
    /// VM `vm` stops (or starts again) answering probes: a guest that resumes too slowly.
    ToggleMute { vm: usize },
    /// Site `at`'s hypervisor announces VM `vm` although it is not there.
    Ghost {
        vm: usize,
        at: usize,
        announce: Announce,
    },
}

fn announce() -> impl Strategy<Value = Announce> {
    prop_oneof![
        Just(Announce::RarpBurst),
        Just(Announce::Garp),
        Just(Announce::Silent),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let site = 0..SITES.len();
    prop_oneof![
        4 => (0..VMS, site.clone(), announce())
            .prop_map(|(vm, to, announce)| Step::Move { vm, to, announce }),
        8 => any::<usize>().prop_map(|pick| Step::Deliver { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Duplicate { pick }),
        1 => any::<usize>().prop_map(|pick| Step::Lose { pick }),
        2 => Just(Step::Settle),
        2 => (1u64..2_000).prop_map(|ms| Step::Wait { ms }),
        1 => (0..VMS).prop_map(|vm| Step::Speak { vm }),
        1 => site.clone().prop_map(|site| Step::Restart { site }),
        1 => (site.clone(), site).prop_map(|(a, b)| Step::Partition { a, b }),
        1 => Just(Step::Heal),
        1 => (0..VMS).prop_map(|vm| Step::ToggleMute { vm }),
        1 => (0..VMS, 0..SITES.len(), announce())
            .prop_map(|(vm, at, announce)| Step::Ghost { vm, at, announce }),
    ]
}

fn world() -> World {
    world_of(&SITES)
}

fn world_of(sites: &[&str]) -> World {
    world_with(sites, Takeover::Optimistic)
}

fn world_with(sites: &[&str], takeover: Takeover) -> World {
    let mut world = World::build(sites, &[], |config| {
        // Many moves in a short case are the point here, not move damping.
        config.damping.max_moves = 1_000;
        config.damping.freeze = FREEZE;
        config.takeover = takeover;
    });
    world.delivery = Delivery::Manual;
    world
}

fn apply(world: &mut World, step: &Step) {
    match *step {
        Step::Move { vm, to, announce } => {
            let ip = world.vms[vm].ip;
            world.arrive(ip, to, announce);
        }
        Step::Deliver { pick } => world.deliver(pick),
        Step::Duplicate { pick } => world.duplicate(pick),
        Step::Lose { pick } => world.lose(pick),
        Step::Settle => {
            world.settle();
        }
        Step::Wait { ms } => world.advance(Duration::from_millis(ms)),
        Step::Speak { vm } => {
            let ip = world.vms[vm].ip;
            world.speak(ip);
        }
        Step::Restart { site } => world.restart(site),
        Step::Partition { a, b } => world.partition(a, b),
        Step::Heal => world.heal(),
        Step::ToggleMute { vm } => {
            let ip = world.vms[vm].ip;
            if !world.mute.remove(&ip) {
                world.mute.insert(ip);
            }
        }
        Step::Ghost { vm, at, announce } => {
            let ip = world.vms[vm].ip;
            world.ghost_announce(ip, at, announce);
        }
    }
}

/// Heals everything, lets every VM answer again, delivers reliably, waits out freezes and lets
/// every VM speak.
fn converge(world: &mut World) {
    world.heal();
    world.mute.clear();
    world.delivery = Delivery::InOrder;
    world.settle();
    world.advance(FREEZE * 2);
    for vm in 0..world.vms.len() {
        let ip = world.vms[vm].ip;
        world.speak(ip);
    }
    world.advance(Duration::from_secs(3));
    world.advance(DIGEST_INTERVAL * 2);
}

/// Runs `steps` from a fresh world of `sites` and checks the end state.
fn run(sites: &[&str], steps: &[Step]) -> Result<(), String> {
    run_with(sites, Takeover::Optimistic, steps)
}

fn run_with(sites: &[&str], takeover: Takeover, steps: &[Step]) -> Result<(), String> {
    let mut world = world_with(sites, takeover);
    for step in steps {
        apply(&mut world, step);
    }
    converge(&mut world);
    world.check_converged()
}

/// Cases per run unless `PROPTEST_CASES` says otherwise: a few seconds in release.
const CASES: u32 = 4096;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig {
        cases,
        max_shrink_iters: 8192,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn routers_agree_with_where_the_vms_are_after_any_history(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        if let Err(problem) = run(&SITES, &steps) {
            return Err(TestCaseError::fail(problem));
        }
    }

    /// The same with `migration.takeover = "confirmed"`.
    #[test]
    fn with_a_confirmed_takeover_too(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        if let Err(problem) = run_with(&SITES, Takeover::Confirmed, &steps) {
            return Err(TestCaseError::fail(problem));
        }
    }
}

#[test]
fn a_quiet_world_is_converged() {
    let mut world = world();
    converge(&mut world);
    world.check_converged().unwrap();
}

#[test]
fn the_end_check_fails_when_a_router_is_wrong() {
    // The property must be able to fail: a VM that moved without a word, with the routers
    // never told, is placed at its old site, and the check says so.
    let mut world = world();
    world.delivery = Delivery::InOrder;
    let vm = world.vms[0].ip;
    world.arrive(vm, 1, Announce::Silent);
    let problem = world.check_converged().unwrap_err();
    assert!(problem.contains("10.77.1.1"), "{problem}");
}

/// The shrunk failures found so far, each a literal history that must converge.
#[path = "migration_props/regressions.rs"]
mod regressions;
