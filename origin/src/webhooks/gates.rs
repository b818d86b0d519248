//! Per-endpoint gates of one origin: at most `webhooks.endpoint_concurrency` attempts in flight per
//! endpoint, at most its `rate_limit` attempts per second, and a short line of deliveries waiting for
//! a turn. What a gate decides ([`Gate::enter`]) takes the time as an argument and is tested without
//! waiting; [`Gates::admit`] waits for what it decided.
//!
//! Invariants: a delivery waits here at most [`MAX_WAIT`], holding no attempt slot of the origin;
//! at most as many wait as can start within [`MAX_WAIT`] at the pace the endpoint answers; the
//! others are put off through the store to turns booked at that pace, and a delivery taken while
//! turns are booked goes behind them. Gates are never removed, so one waited on is found again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::storage::webhooks::StoredEndpoint;

/// Deliveries that may wait here for a busy endpoint, per attempt it may have in flight (fewer when
/// it answers too slowly to start them within [`MAX_WAIT`]).
const WAITING_PER_SLOT: usize = 16;
/// The longest a delivery waits here for its endpoint; well within `reclaim_after`, so that no other
/// origin takes it meanwhile.
const MAX_WAIT: Duration = Duration::from_secs(5);
/// How long an attempt is taken to last before one is measured.
const FIRST_ATTEMPT_TIME: Duration = Duration::from_millis(10);

/// The gates of every endpoint this origin has sent to.
#[derive(Debug)]
pub struct Gates {
    concurrency: usize,
    gates: Mutex<HashMap<String, Gate>>,
}

impl Gates {
    /// Gates letting `concurrency` attempts per endpoint be in flight.
    pub fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            gates: Mutex::default(),
        }
    }

    /// Waits for a turn of `endpoint`: a token of its rate limit and one of its attempt slots. A few
    /// deliveries per slot wait here, briefly (each still taken by this origin); beyond that, or
    /// when the turn is further off, answers how long to put the delivery off through the store.
    pub async fn admit(&self, endpoint: &StoredEndpoint, put_off: bool) -> Result<OwnedSemaphorePermit, Duration> {
        let (slots, wait) = {
            let mut gates = self.lock();
            let gate = gates
                .entry(endpoint.id.clone())
                .or_insert_with(|| Gate::new(self.concurrency));
            match gate.enter(Instant::now(), endpoint.rate_limit, put_off) {
                Admission::Wait(wait) => (gate.slots.clone(), wait),
                Admission::PutOff(turn) => return Err(turn),
            }
        };
        tokio::time::sleep(wait).await;
        let permit = tokio::time::timeout(MAX_WAIT, slots.acquire_owned()).await;
        let mut gates = self.lock();
        let Some(gate) = gates.get_mut(&endpoint.id) else {
            // Not so: gates are never removed.
            return Err(MAX_WAIT);
        };
        gate.waiting -= 1;
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(gate.book_turn(Instant::now())),
        }
    }

    /// Records how long an attempt to `endpoint` took.
    pub fn attempted(&self, endpoint: &str, took: Duration) {
        if let Some(gate) = self.lock().get_mut(endpoint) {
            gate.attempted(took);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Gate>> {
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a gate decided for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// It waits here this long, then for an attempt slot.
    Wait(Duration),
    /// It is put off through the store for this long.
    PutOff(Duration),
}

/// One endpoint's gate: its attempts in flight, those waiting for a turn, a token bucket, and the
/// turns booked for deliveries put off.
#[derive(Debug)]
struct Gate {
    concurrency: usize,
    slots: Arc<Semaphore>,
    waiting: usize,
    tokens: f64,
    refilled: Option<Instant>,
    /// How long an attempt takes, on average lately.
    attempt_time: Duration,
    /// The latest turn booked for a delivery put off.
    booked: Option<Instant>,
}

impl Gate {
    fn new(concurrency: usize) -> Self {
        Self {
            concurrency,
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: 0,
            tokens: 0.0,
            refilled: None,
            attempt_time: FIRST_ATTEMPT_TIME,
            booked: None,
        }
    }

    /// Decides at `now` whether a delivery (`put_off` before, or not) waits here for a turn, and
    /// counts it among those waiting when it does.
    fn enter(&mut self, now: Instant, rate_limit: Option<u32>, put_off: bool) -> Admission {
        // The bucket may go below zero: each token taken ahead is a turn further off.
        let mut wait = Duration::ZERO;
        if let Some(rate) = rate_limit {
            let rate = f64::from(rate.max(1));
            let elapsed = self.refilled.map_or(1.0, |at| now.duration_since(at).as_secs_f64());
            self.tokens = (self.tokens + elapsed * rate).min(rate);
            self.refilled = Some(now);
            wait = Duration::from_secs_f64((1.0 - self.tokens).max(0.0) / rate);
        }
        // While turns are booked, a delivery taken since goes behind them, not ahead.
        let line = self.booked.is_some_and(|booked| booked > now);
        if self.waiting >= self.waiting_room() || (line && !put_off) {
            return Admission::PutOff(wait.max(self.book_turn(now)));
        }
        if wait > MAX_WAIT {
            return Admission::PutOff(wait);
        }
        if rate_limit.is_some() {
            self.tokens -= 1.0;
        }
        self.waiting += 1;
        Admission::Wait(wait)
    }

    /// The time between turns at the pace the endpoint answers.
    fn pace(&self) -> Duration {
        self.attempt_time / u32::try_from(self.concurrency).unwrap_or(u32::MAX)
    }

    /// How many may wait here: as many as can start within [`MAX_WAIT`], at most
    /// [`WAITING_PER_SLOT`] per slot. A slow endpoint thus keeps few of the origin's deliveries
    /// waiting.
    fn waiting_room(&self) -> usize {
        let startable = MAX_WAIT.as_secs_f64() / self.pace().as_secs_f64().max(1e-6);
        (self.concurrency * WAITING_PER_SLOT).min(startable as usize)
    }

    /// Books a turn after those waiting and those booked before, at the pace the endpoint answers,
    /// and answers how long until then: deliveries put off return about when they can start instead
    /// of all at once, so each is put off about once.
    fn book_turn(&mut self, now: Instant) -> Duration {
        let pace = self.pace();
        let after_waiting = now + pace * u32::try_from(self.waiting).unwrap_or(u32::MAX);
        let turn = self
            .booked
            .filter(|&booked| booked > after_waiting)
            .unwrap_or(after_waiting)
            + pace;
        self.booked = Some(turn);
        (turn - now).max(Duration::from_millis(1))
    }

    fn attempted(&mut self, took: Duration) {
        self.attempt_time = (self.attempt_time * 7 + took) / 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::endpoints::example;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn an_idle_endpoint_without_a_rate_limit_is_admitted_at_once() {
        let mut gate = Gate::new(2);
        let now = Instant::now();
        assert_eq!(gate.enter(now, None, false), Admission::Wait(Duration::ZERO));
        assert_eq!(gate.enter(now, None, false), Admission::Wait(Duration::ZERO));
        assert_eq!(gate.waiting, 2);
    }

    #[test]
    fn a_rate_limit_spaces_turns_and_puts_off_those_beyond_max_wait() {
        let mut gate = Gate::new(1);
        let now = Instant::now();
        // A full bucket of one token a second, then a turn a second further off each.
        for seconds in 0..=5 {
            assert_eq!(gate.enter(now, Some(1), false), Admission::Wait(SECOND * seconds));
        }
        assert_eq!(gate.enter(now, Some(1), false), Admission::PutOff(SECOND * 6));
        assert_eq!(gate.waiting, 6, "one put off does not wait");
        // Tokens come back with time: two seconds later, the next turn is two seconds nearer.
        assert_eq!(
            gate.enter(now + SECOND * 2, Some(1), false),
            Admission::Wait(SECOND * 4)
        );
    }

    #[test]
    fn a_full_waiting_room_puts_deliveries_off_to_turns_booked_at_the_endpoints_pace() {
        let mut gate = Gate::new(1);
        let now = Instant::now();
        for _ in 0..WAITING_PER_SLOT {
            assert_eq!(gate.enter(now, None, false), Admission::Wait(Duration::ZERO));
        }
        let pace = FIRST_ATTEMPT_TIME;
        let after_waiting = pace * u32::try_from(WAITING_PER_SLOT).unwrap();
        assert_eq!(gate.enter(now, None, false), Admission::PutOff(after_waiting + pace));
        assert_eq!(gate.enter(now, None, true), Admission::PutOff(after_waiting + pace * 2));
        assert_eq!(gate.waiting, WAITING_PER_SLOT);
    }

    #[test]
    fn deliveries_taken_while_turns_are_booked_go_behind_them() {
        let mut gate = Gate::new(1);
        let now = Instant::now();
        let turn = gate.book_turn(now);
        assert_eq!(
            gate.enter(now, None, false),
            Admission::PutOff(turn + FIRST_ATTEMPT_TIME)
        );
        // One put off before has its turn: it waits here.
        assert_eq!(gate.enter(now, None, true), Admission::Wait(Duration::ZERO));
        // Once the booked turns have passed, nobody is behind them.
        assert_eq!(gate.enter(now + SECOND, None, false), Admission::Wait(Duration::ZERO));
    }

    #[test]
    fn a_slow_endpoint_keeps_fewer_deliveries_waiting() {
        let mut gate = Gate::new(2);
        assert_eq!(gate.waiting_room(), 2 * WAITING_PER_SLOT);
        gate.attempted(Duration::from_millis(90));
        assert_eq!(gate.attempt_time, Duration::from_millis(20), "a running average");
        gate.attempt_time = SECOND;
        // Two slots, a second an attempt: ten can start within five seconds.
        assert_eq!(gate.waiting_room(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_endpoint_at_its_concurrency_puts_off_what_waited_max_wait() {
        let gates = Gates::new(1);
        let endpoint = example();
        let slot = gates.admit(&endpoint, false).await.expect("a free slot");
        let started = tokio::time::Instant::now();
        let put_off = gates
            .admit(&endpoint, false)
            .await
            .expect_err("no slot within MAX_WAIT");
        assert!(started.elapsed() >= MAX_WAIT, "{:?}", started.elapsed());
        assert!(put_off >= Duration::from_millis(1), "{put_off:?}");
        drop(slot);
        // Put off before, so not behind the turn just booked.
        assert!(gates.admit(&endpoint, true).await.is_ok(), "the slot is free again");
        assert_eq!(gates.lock()[&endpoint.id].waiting, 0);
    }
}
