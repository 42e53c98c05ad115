// `e2e/stack kafka-principal`: a SCRAM-SHA-512 principal and its ACLs, made
// through the Admin API of the broker's PLAINTEXT listener (whose clients
// are super users). Run by Java's single-file source launcher with Kafka's
// jars on the class path. The password comes on stdin, never on a command
// line, where any local user could read it.
//
// Usage: KafkaPrincipal BOOTSTRAP NAME [write:TOPIC | read:TOPIC | group:GROUP]...
// The grants are the README's ACL lines: a producer writes its topic (Write
// implies Describe); a consumer reads its topic and its configs (the
// operator's retention check) and joins its group.

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class KafkaPrincipal {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            throw new IllegalArgumentException("usage: KafkaPrincipal BOOTSTRAP NAME [GRANT]...");
        }
        String bootstrap = args[0];
        String name = args[1];
        String password = new String(System.in.readAllBytes(), StandardCharsets.UTF_8).trim();
        if (password.isEmpty()) {
            throw new IllegalArgumentException("no password on stdin");
        }
        List<AclBinding> acls = new ArrayList<>();
        for (int i = 2; i < args.length; i++) {
            String[] grant = args[i].split(":", 2);
            if (grant.length != 2 || grant[1].isEmpty()) {
                throw new IllegalArgumentException("not KIND:NAME: " + args[i]);
            }
            ResourceType type;
            List<AclOperation> operations;
            switch (grant[0]) {
                case "write" -> {
                    type = ResourceType.TOPIC;
                    operations = List.of(AclOperation.WRITE);
                }
                case "read" -> {
                    type = ResourceType.TOPIC;
                    operations = List.of(AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS);
                }
                case "group" -> {
                    type = ResourceType.GROUP;
                    operations = List.of(AclOperation.READ);
                }
                default -> throw new IllegalArgumentException("unknown grant kind: " + args[i]);
            }
            ResourcePattern resource = new ResourcePattern(type, grant[1], PatternType.LITERAL);
            for (AclOperation operation : operations) {
                acls.add(new AclBinding(resource,
                        new AccessControlEntry("User:" + name, "*", operation, AclPermissionType.ALLOW)));
            }
        }
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            ScramCredentialInfo info = new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192);
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(name, info, password)))
                    .all().get();
            if (!acls.isEmpty()) {
                admin.createAcls(acls).all().get();
            }
        }
    }
}
