// Names starting with `__` are the generated code's.
#[uds::service]
pub trait Svc {
    async fn __data(&self) -> u32;
}

fn main() {}
