use saga_core::Provides;

struct Payments;
struct Mailer;
struct Services {
    mailer: Mailer,
}

impl Provides<Mailer> for Services {
    fn provide(&self) -> &Mailer {
        &self.mailer
    }
}

/// What a step asking for `&Payments` needs of its saga's dependencies.
fn payments<D: Provides<Payments>>(deps: &D) -> &Payments {
    deps.provide()
}

fn main() {
    let services = Services { mailer: Mailer };
    let _ = payments(&services);
}
