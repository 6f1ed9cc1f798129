// App-side helper for Java: read a secret the way Swarm and devsecrets deliver it.
// Copy it into your application. ReadSecret.read("db_password") returns the bytes of
// $DB_PASSWORD_FILE if that variable is set, else of /run/secrets/db_password.
// The same code runs unchanged on a laptop (`devsecrets up`, `devsecrets run`) and on a swarm.
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

public final class ReadSecret {
    private ReadSecret() {}

    public static String fileVariable(String name) {
        return name.replaceAll("[^A-Za-z0-9]", "_").toUpperCase(java.util.Locale.ROOT) + "_FILE";
    }

    public static byte[] read(String name) throws IOException {
        String path = System.getenv(fileVariable(name));
        if (path == null || path.isEmpty()) {
            path = "/run/secrets/" + name;
        }
        return Files.readAllBytes(Path.of(path));
    }

    // `java ReadSecret.java NAME` writes the secret's bytes to stdout (used by the tests).
    public static void main(String[] args) throws IOException {
        System.out.write(read(args[0]));
        System.out.flush();
    }
}
