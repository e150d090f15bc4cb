// A JSON argument whose type is not serde: one error, on that type.
pub struct Point {
    pub x: i32,
}

#[uds::service]
pub trait Geo {
    async fn ping(&self) -> u32;
    async fn put(&self, p: Point) -> u32;
}

fn main() {}
