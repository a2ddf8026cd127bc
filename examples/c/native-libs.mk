# The system libraries the Rust static library links against, as printed by
#   cargo rustc -p dialpool-ffi --release --crate-type staticlib -- --print native-static-libs
# The README quotes this line; tests/run.sh checks that all three agree.
NATIVE_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
