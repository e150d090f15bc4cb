// A `where` clause on the trait: the error is on the clause.
#[uds::service]
pub trait Svc
where
    Self: Sized,
{
    async fn get(&self) -> u32;
}

fn main() {}
