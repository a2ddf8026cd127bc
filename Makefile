# Building and installing the C library:
#   make                      libdialpool.a and libdialpool.so (release)
#   make install PREFIX=/usr/local   (also DESTDIR=… for packaging)
# After installing: cc app.c $(pkg-config --cflags --libs dialpool)
# or, static: cc app.c $(pkg-config --cflags --libs --static dialpool) with -l:libdialpool.a
PREFIX ?= /usr/local
DESTDIR ?=
include examples/c/native-libs.mk
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TARGET := target/release

all: lib

lib:
	cargo build --release -p dialpool-ffi

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/dialpool.h $(DESTDIR)$(PREFIX)/include/dialpool.h
	install -m 644 $(TARGET)/libdialpool.a $(DESTDIR)$(PREFIX)/lib/libdialpool.a
	install -m 755 $(TARGET)/libdialpool.so $(DESTDIR)$(PREFIX)/lib/libdialpool.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' -e 's|@NATIVE_LIBS@|$(NATIVE_LIBS)|' \
		dialpool.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/dialpool.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/dialpool.h $(DESTDIR)$(PREFIX)/lib/libdialpool.a \
		$(DESTDIR)$(PREFIX)/lib/libdialpool.so $(DESTDIR)$(PREFIX)/lib/pkgconfig/dialpool.pc

.PHONY: all lib install uninstall
