//! A fan-out declared with the macros: after the order is created, the
//! stock is reserved and a courier booked at the same time, in a
//! `parallel` group.
//!
//! The branches share the context (`&Dispatch`): what they change lives
//! behind the services' own locks, and what a compensation needs (the
//! reservation, the booking) is the branch's output. The first order goes
//! through. For the second the courier has no slot: the group lets the
//! stock reservation finish, releases it from the reservation its step
//! returned, and then cancels the order. The saga's diagram shows the fork
//! and the join.
//!
//! `cargo run --example parallel_order`

use std::sync::Mutex;
use std::time::Duration;

use saga_core::{SagaError, StepError, StepInfo, saga, saga_task};

/// The world outside the saga: what each service holds.
#[derive(Default)]
struct Dispatch {
    orders: Mutex<Vec<String>>,
    reservations: Mutex<Vec<String>>,
    bookings: Mutex<Vec<String>>,
    /// The courier has no free slot.
    courier_full: bool,
}

fn lock(list: &Mutex<Vec<String>>) -> Result<std::sync::MutexGuard<'_, Vec<String>>, StepError> {
    list.lock()
        .map_err(|_| StepError::new("a service's lock was poisoned"))
}

#[saga_task(undo = cancel_order)]
fn create_order(d: &mut Dispatch, info: &StepInfo<'_>) -> Result<String, StepError> {
    let id = format!("order {}", info.execution_id());
    lock(&d.orders)?.push(id.clone());
    println!("  created {id}");
    Ok(id)
}

#[saga_task]
fn cancel_order(d: &mut Dispatch, id: Option<&String>) -> Result<(), StepError> {
    lock(&d.orders)?.retain(|o| Some(o) != id);
    println!("  cancelled {}", id.map_or("the order", String::as_str));
    Ok(())
}

/// A branch: takes the context as `&Dispatch`.
#[saga_task(undo = release_stock, timeout = "2s")]
async fn reserve_stock(d: &Dispatch, info: &StepInfo<'_>) -> Result<String, StepError> {
    // The warehouse answers after a while; the courier is asked meanwhile.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reservation = format!("stock for {}", info.idempotency_key());
    lock(&d.reservations)?.push(reservation.clone());
    println!("  reserved {reservation}");
    Ok(reservation)
}

/// Undoes by what its step returned; `None` (an unknown outcome) would
/// need the idempotency key instead.
#[saga_task]
async fn release_stock(d: &Dispatch, reservation: Option<&String>) -> Result<(), StepError> {
    lock(&d.reservations)?.retain(|r| Some(r) != reservation);
    println!("  released {}", reservation.map_or("?", String::as_str));
    Ok(())
}

#[saga_task(undo = cancel_courier)]
async fn book_courier(d: &Dispatch, info: &StepInfo<'_>) -> Result<String, StepError> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    if d.courier_full {
        println!("  courier: no slot");
        return Err("the courier has no free slot".into());
    }
    let booking = format!("courier for {}", info.idempotency_key());
    lock(&d.bookings)?.push(booking.clone());
    println!("  booked {booking}");
    Ok(booking)
}

#[saga_task]
fn cancel_courier(d: &Dispatch, booking: Option<&String>) -> Result<(), StepError> {
    lock(&d.bookings)?.retain(|b| Some(b) != booking);
    Ok(())
}

#[saga_task]
fn print_label(d: &Dispatch) -> Result<(), StepError> {
    println!(
        "  label printed for {} booking(s)",
        lock(&d.bookings)?.len()
    );
    Ok(())
}

/// How many entries a service holds.
fn held(list: &Mutex<Vec<String>>) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(list
        .lock()
        .map_err(|_| "a service's lock was poisoned")?
        .len())
}

#[tokio::main(flavor = "current_thread")]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dispatch = saga! {
        name: "dispatch",
        context: Dispatch,
        step create_order;
        parallel {
            step reserve_stock;
            step book_courier, retry 2, backoff 10ms;
        }
        step print_label;
    };
    println!("{}", dispatch.to_mermaid());

    println!("first order:");
    let mut world = Dispatch::default();
    let report = dispatch.run(&mut world).await?;
    println!("  {}", report.status);
    if (held(&world.reservations)?, held(&world.bookings)?) != (1, 1) {
        return Err("the first order should hold a reservation and a booking".into());
    }

    println!("second order, the courier is full:");
    let mut world = Dispatch {
        courier_full: true,
        ..Dispatch::default()
    };
    match dispatch.run(&mut world).await {
        Err(error @ SagaError::Compensated { .. }) => println!("  {error}"),
        other => return Err(format!("expected a rollback, got {other:?}").into()),
    }
    // Everything the saga did is undone: the reservation and the order.
    let left = (
        held(&world.orders)?,
        held(&world.reservations)?,
        held(&world.bookings)?,
    );
    if left != (0, 0, 0) {
        return Err(
            format!("the rollback left (orders, reservations, bookings) = {left:?}").into(),
        );
    }
    Ok(())
}
