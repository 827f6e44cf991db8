# start_nginx ROOT_DIR WORK_DIR: serves ROOT_DIR on a free loopback port as an
# unprivileged nginx; sets NGINX_PORT and NGINX_PID_FILE. stop_nginx stops it.
# With NGINX_BYTES_LOG set, every response's body bytes go to that file, one
# number per line (to count what the origin served).

start_nginx() {
  local root=$1 work=$2
  mkdir -p "$work"
  NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  NGINX_PID_FILE="$work/nginx.pid"
  # As root, workers would drop to nobody and lose access to private temp dirs.
  local user_line=""
  [ "$(id -u)" -eq 0 ] && user_line="user root;"
  local access="access_log off;"
  [ -n "${NGINX_BYTES_LOG:-}" ] && access="log_format bytes '\$body_bytes_sent'; access_log $NGINX_BYTES_LOG bytes;"
  cat > "$work/nginx.conf" <<CONF
$user_line
worker_processes 1;
pid $NGINX_PID_FILE;
error_log $work/error.log warn;
events { worker_connections 256; }
http {
  $access
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $root;
  }
}
CONF
  nginx -c "$work/nginx.conf" -p "$work" -e "$work/error.log"
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null && return 0
    curl -sS -o /dev/null "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nginx did not start" >&2
  return 1
}

stop_nginx() {
  [ -n "${NGINX_PID_FILE:-}" ] && [ -f "$NGINX_PID_FILE" ] && kill "$(cat "$NGINX_PID_FILE")" 2>/dev/null || true
}
