// A `where` clause on a method: the error is on the clause.
#[uds::service]
pub trait Svc {
    async fn get(&self) -> u32
    where
        Self: Sized;
}

fn main() {}
