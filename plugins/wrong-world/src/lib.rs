//! A test component exporting some other world, to show the runner's error for it.

wit_bindgen::generate!({
    inline: "package test:other; world other { export hello: func() -> string; }",
    world: "other",
});

struct Other;

impl Guest for Other {
    fn hello() -> String {
        "hello".into()
    }
}

export!(Other);
