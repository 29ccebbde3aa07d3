package dev.switchboard.interop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.socket.client.IO;
import io.socket.client.Socket;
import io.socket.engineio.client.transports.Polling;
import io.socket.engineio.client.transports.WebSocket;
import java.io.File;
import java.net.HttpURLConnection;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;
import org.json.JSONObject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The official Java client (io.socket:socket.io-client) against a real {@code switchboard
 * serve}, over long-polling alone and WebSocket alone: a token connects and a bad one gets
 * {@code connect_error} with the protocol code; join, send, the ack with the stored message,
 * its delivery to the other member; an error code in an ack.
 */
class OfficialJavaClientTest {
  static final long TIMEOUT_S = 5;
  static final SecureRandom RANDOM = new SecureRandom();
  static Process node;
  static String url;
  static String secret;
  final List<Socket> sockets = new ArrayList<>();

  static String hex(int bytes) {
    byte[] b = new byte[bytes];
    RANDOM.nextBytes(b);
    return HexFormat.of().formatHex(b);
  }

  @BeforeAll
  static void startNode() throws Exception {
    String bin = System.getenv().getOrDefault("SWITCHBOARD_BIN", "../../target/debug/switchboard");
    int port;
    try (ServerSocket s = new ServerSocket(0)) {
      port = s.getLocalPort();
    }
    secret = "java-" + hex(20);
    url = "http://127.0.0.1:" + port;
    ProcessBuilder pb = new ProcessBuilder(bin, "serve", "--listen", "127.0.0.1:" + port);
    pb.environment().keySet().removeIf(k -> k.startsWith("SWITCHBOARD_"));
    pb.environment().put("SWITCHBOARD_JWT_SECRET", secret);
    pb.environment().put("SWITCHBOARD_DRAIN_WINDOW", "500ms");
    pb.redirectErrorStream(true).redirectOutput(new File("target/switchboard-" + port + ".log"));
    node = pb.start();
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
    while (true) {
      if (!node.isAlive()) throw new IllegalStateException(bin + " exited: " + node.exitValue());
      try {
        HttpURLConnection c = (HttpURLConnection) URI.create(url + "/healthz").toURL().openConnection();
        c.setConnectTimeout(1000);
        if (c.getResponseCode() == 200) return;
      } catch (java.io.IOException notYet) {
        // not listening yet
      }
      if (System.nanoTime() > deadline) throw new IllegalStateException("/healthz did not answer");
      Thread.sleep(50);
    }
  }

  @AfterAll
  static void stopNode() throws Exception {
    node.destroy();
    if (!node.waitFor(5, TimeUnit.SECONDS)) node.destroyForcibly().waitFor();
  }

  @AfterEach
  void closeSockets() {
    sockets.forEach(Socket::close);
  }

  static String b64(byte[] raw) {
    return Base64.getUrlEncoder().withoutPadding().encodeToString(raw);
  }

  /** An HS256 token for sub@tenant, as an app's identity provider would mint it. */
  static String token(String sub, String tenant, String key) throws Exception {
    long now = System.currentTimeMillis() / 1000;
    String head = b64("{\"alg\":\"HS256\",\"typ\":\"JWT\"}".getBytes(StandardCharsets.UTF_8));
    JSONObject claims = new JSONObject().put("sub", sub).put("tenant", tenant).put("exp", now + 3600);
    String body = b64(claims.toString().getBytes(StandardCharsets.UTF_8));
    Mac mac = Mac.getInstance("HmacSHA256");
    mac.init(new SecretKeySpec(key.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
    return head + "." + body + "." + b64(mac.doFinal((head + "." + body).getBytes(StandardCharsets.UTF_8)));
  }

  static String[] transports(String name) {
    return new String[] {name.equals("websocket") ? WebSocket.NAME : Polling.NAME};
  }

  /** A socket on /chat; completes with null when connected, or the connect_error message. */
  CompletableFuture<String> connect(Socket s) {
    CompletableFuture<String> done = new CompletableFuture<>();
    s.on(Socket.EVENT_CONNECT, a -> done.complete(null));
    s.on(Socket.EVENT_CONNECT_ERROR, a -> done.complete(
        a.length > 0 && a[0] instanceof JSONObject j ? j.optString("message") : String.valueOf(a.length > 0 ? a[0] : "")));
    s.connect();
    return done;
  }

  Socket socket(String transport, String token) {
    IO.Options o = IO.Options.builder()
        .setTransports(transports(transport))
        .setAuth(Map.of("token", token))
        .setReconnection(false)
        .setForceNew(true)
        .build();
    Socket s = IO.socket(URI.create(url + "/chat"), o);
    sockets.add(s);
    return s;
  }

  Socket connected(String transport, String token) throws Exception {
    Socket s = socket(transport, token);
    String refused = connect(s).get(TIMEOUT_S, TimeUnit.SECONDS);
    assertEquals(null, refused, "connect_error");
    return s;
  }

  /** Emit with an ack and wait for it. */
  static JSONObject call(Socket s, String event, JSONObject payload) throws Exception {
    CompletableFuture<JSONObject> ack = new CompletableFuture<>();
    s.emit(event, new Object[] {payload}, a -> ack.complete((JSONObject) a[0]));
    return ack.get(TIMEOUT_S, TimeUnit.SECONDS);
  }

  static JSONObject ok(Socket s, String event, JSONObject payload) throws Exception {
    JSONObject r = call(s, event, payload);
    assertTrue(r.getBoolean("ok"), event + ": " + r);
    return r.getJSONObject("data");
  }

  @ParameterizedTest
  @ValueSource(strings = {"polling", "websocket"})
  void badTokensGetConnectErrorWithTheCode(String transport) throws Exception {
    String tenant = "acme-" + hex(4);
    String wrongKey = token("alice", tenant, "another-secret-" + hex(16));
    String message = connect(socket(transport, wrongKey)).get(TIMEOUT_S, TimeUnit.SECONDS);
    assertTrue(message != null && message.startsWith("unauthorized"), "got " + message);
    assertEquals(null, connect(socket(transport, token("alice", tenant, secret))).get(TIMEOUT_S, TimeUnit.SECONDS));
  }

  @ParameterizedTest
  @ValueSource(strings = {"polling", "websocket"})
  void joinSendAckAndDelivery(String transport) throws Exception {
    String tenant = "acme-" + hex(4);
    String room = "room-" + hex(4);
    Socket alice = connected(transport, token("alice", tenant, secret));
    Socket bob = connected(transport, token("bob", tenant, secret));
    LinkedBlockingQueue<JSONObject> atBob = new LinkedBlockingQueue<>();
    bob.on("message:new", a -> atBob.add((JSONObject) a[0]));

    JSONObject created = ok(alice, "room:create", new JSONObject().put("room_id", room).put("visibility", "public"));
    assertEquals("alice", created.getJSONObject("room").getString("owner_id"));
    assertEquals(room, ok(bob, "room:join", new JSONObject().put("room_id", room)).getJSONObject("room").getString("id"));

    JSONObject msg = ok(alice, "message:send", new JSONObject().put("room_id", room).put("body", "hello from java"))
        .getJSONObject("message");
    assertEquals(1, msg.getInt("seq"));
    assertEquals("alice", msg.getString("sender_id"));
    JSONObject delivered = atBob.poll(TIMEOUT_S, TimeUnit.SECONDS);
    assertTrue(delivered != null, "bob got message:new");
    assertEquals(msg.getString("id"), delivered.getJSONObject("message").getString("id"));
    assertEquals("hello from java", delivered.getJSONObject("message").getString("body"));

    JSONObject refused = call(alice, "room:join", new JSONObject().put("room_id", 7));
    assertFalse(refused.getBoolean("ok"));
    assertEquals("bad_request", refused.getJSONObject("error").getString("code"));
  }
}
