#[uds::service]
pub struct Svc;

fn main() {}
