# A real SMTP server for the e-mail channel: aiosmtpd (pinned from PyPI into a venv under
# the cache), run with its Mailbox handler so every accepted message lands as a file in
# a Maildir that tests read back.
#
# Exports SWITCHBOARD_TEST_SMTP_URL=smtp://127.0.0.1:PORT and
# SWITCHBOARD_TEST_SMTP_MAILDIR=<dir> (messages appear in <dir>/new).

SMTP_VENV="$SB_CACHE/aiosmtpd-$AIOSMTPD_VERSION"

smtp_install() {
    [ -x "$SMTP_VENV/bin/python" ] && "$SMTP_VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null && return 0
    python3 -c 'import venv, ensurepip' 2>/dev/null || sb_apt python3-venv || return 1
    rm -rf "$SMTP_VENV"
    python3 -m venv "$SMTP_VENV" >>"$SB_LOGS/smtp.log" 2>&1 || return 1
    "$SMTP_VENV/bin/pip" install -q "aiosmtpd==$AIOSMTPD_VERSION" >>"$SB_LOGS/smtp.log" 2>&1 || return 1
}

smtp_start() {
    local port dir="$SB_STATE/smtp"
    port="$(sb_free_port)"
    rm -rf "$dir"
    mkdir -p "$dir/maildir/tmp" "$dir/maildir/new" "$dir/maildir/cur"
    sb_spawn smtp "$SMTP_VENV/bin/python" -m aiosmtpd -n -l "127.0.0.1:$port" \
        -c aiosmtpd.handlers.Mailbox "$dir/maildir"
    if ! sb_wait_port "$port" 30; then
        sb_log "aiosmtpd did not listen on $port in 30s"
        return 1
    fi
    sb_export SWITCHBOARD_TEST_SMTP_URL "smtp://127.0.0.1:$port"
    sb_export SWITCHBOARD_TEST_SMTP_MAILDIR "$dir/maildir"
}
