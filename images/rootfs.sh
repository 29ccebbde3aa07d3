# shellcheck shell=sh
# Filling a minimal image root file system: the program, exactly the shared libraries
# `ldd` lists for it (the loader too), passwd/group entries, the CA bundle. Sourced by
# images/build (the offline build) and by images/Dockerfile (the Docker build), so both
# produce the same files. POSIX sh: the Dockerfile runs it under Debian's dash.

# copy_in ROOTFS FILE: FILE at the same path inside ROOTFS (a symlink's target's content,
# so the image holds plain files under the names the loader asks for).
copy_in() {
    mkdir -p "$1$(dirname "$2")" &&
    cp -L --preserve=mode "$2" "$1$2"
}

# add_program ROOTFS BINARY [DEST]: the program at DEST and every shared library ldd lists.
add_program() {
    _rootfs="$1" _bin="$2" _dest="${3:-$2}"
    mkdir -p "$_rootfs$(dirname "$_dest")" &&
    cp -L "$_bin" "$_rootfs$_dest" &&
    chmod 0755 "$_rootfs$_dest" || return 1
    # A static program: ldd says "not a dynamic executable" and fails.
    ldd "$_bin" >/dev/null 2>&1 || return 0
    for _lib in $(ldd "$_bin" | grep -oE '(^|[[:space:]])/[^[:space:]]+' | tr -d ' \t'); do
        copy_in "$_rootfs" "$_lib" || return 1
    done
}

# add_users ROOTFS UID NAME: /etc/passwd and /etc/group with root, nobody and the image's
# user (no login shell for anyone: there is none).
add_users() {
    mkdir -p "$1/etc" || return 1
    {
        echo "root:x:0:0:root:/root:/sbin/nologin"
        echo "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin"
        [ "$2" = 65534 ] || echo "$3:x:$2:$2:$3:/nonexistent:/sbin/nologin"
    } > "$1/etc/passwd"
    {
        echo "root:x:0:"
        echo "nogroup:x:65534:"
        [ "$2" = 65534 ] || echo "$3:x:$2:"
    } > "$1/etc/group"
    chmod 0644 "$1/etc/passwd" "$1/etc/group"
}

# add_ca_bundle ROOTFS: Debian's CA bundle (Redis over TLS, Kafka, MongoDB, FCM, APNs, SMTP).
add_ca_bundle() {
    copy_in "$1" /etc/ssl/certs/ca-certificates.crt
}

# add_switchboard_program ROOTFS BINARY DEST: what a Switchboard image holds: the program
# at DEST with its libraries, the user 65532 (nonroot) and the CA bundle.
add_switchboard_program() {
    add_program "$1" "$2" "$3" && add_users "$1" 65532 nonroot && add_ca_bundle "$1"
}
