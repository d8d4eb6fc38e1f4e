//! [`Provides`]: how a saga's dependencies hand a step the tool it asks
//! for.

/// A saga's dependencies `Self` hold a `T` that steps may borrow: an HTTP
/// client, a database pool, configuration.
///
/// A saga declares one dependency type `D` (`Saga<C, D>`, or `saga! {
/// .., dependencies: Services, .. }`); a `#[saga_task]` function asks for
/// `&T` in a parameter after the context, and the saga's `D` must provide
/// it. Every type provides itself, so a saga whose dependencies are one
/// client needs nothing more; a struct of several tools implements
/// `Provides` once for each:
///
/// ```
/// use saga_core::Provides;
///
/// struct Payments;
/// struct Mailer;
/// struct Services { payments: Payments, mailer: Mailer }
///
/// impl Provides<Payments> for Services {
///     fn provide(&self) -> &Payments { &self.payments }
/// }
/// impl Provides<Mailer> for Services {
///     fn provide(&self) -> &Mailer { &self.mailer }
/// }
///
/// let services = Services { payments: Payments, mailer: Mailer };
/// let _payments: &Payments = services.provide();
/// let _itself: &Services = services.provide();
/// ```
#[diagnostic::on_unimplemented(
    message = "the saga's dependencies `{Self}` do not provide `{T}`",
    label = "a step asks for `&{T}`, and `{Self}` does not provide it",
    note = "implement `saga_core::Provides<{T}>` for `{Self}` (returning the `{T}` it holds), or make `{T}` the saga's dependencies"
)]
pub trait Provides<T: ?Sized> {
    /// The `T` these dependencies hold.
    fn provide(&self) -> &T;
}

impl<T> Provides<T> for T {
    fn provide(&self) -> &T {
        self
    }
}
