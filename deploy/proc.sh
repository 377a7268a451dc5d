# Process checks shared by the deploy scripts (sourced, not run).

# pid_alive PID_FILE: the pid file's process is alive. Enough for a process the caller just
# launched, whose command line is still the caller's between fork and exec.
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# pid_runs PID_FILE TEXT: alive, and its command line contains TEXT (the server's own data path).
# After a reboot a pid file may name an unrelated process, which a script must never kill.
pid_runs() {
  pid_alive "$1" && tr '\0' ' ' <"/proc/$(cat "$1")/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# port_in_use PORT: something accepts connections on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
