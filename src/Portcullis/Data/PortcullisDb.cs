using System.Text;
using Microsoft.EntityFrameworkCore;
using Microsoft.EntityFrameworkCore.Storage.ValueConversion;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Gateway;
using Portcullis.OAuth;
using Portcullis.Tokens;
using Portcullis.Users;

namespace Portcullis.Data;

/// <summary>
/// The one DbContext, and every table is in it but the migrations' own record (docs/decisions.md, "Reaching the
/// database"). The schema itself is owned by the versioned SQL scripts in Data/Migrations; this model only maps onto it
/// (snake_case tables and columns, UTC times).
/// </summary>
internal sealed class PortcullisDb(DbContextOptions<PortcullisDb> options) : DbContext(options)
{
    public DbSet<User> Users => Set<User>();
    public DbSet<ApiToken> ApiTokens => Set<ApiToken>();
    public DbSet<TokenUsageDay> TokenUsage => Set<TokenUsageDay>();
    public DbSet<TokenScopeUsageDay> TokenScopeUsage => Set<TokenScopeUsageDay>();
    public DbSet<AuditEvent> AuditEvents => Set<AuditEvent>();
    public DbSet<SigningKey> SigningKeys => Set<SigningKey>();
    public DbSet<OAuthClient> OAuthClients => Set<OAuthClient>();
    public DbSet<RevokedJwt> RevokedJwts => Set<RevokedJwt>();
    public DbSet<StoredSession> Sessions => Set<StoredSession>();
    public DbSet<StoredService> GatewayServices => Set<StoredService>();
    public DbSet<HandshakeCode> HandshakeCodes => Set<HandshakeCode>();
    public DbSet<StoredDataProtectionKey> DataProtectionKeys => Set<StoredDataProtectionKey>();
    public DbSet<LoginCounter> LoginCounters => Set<LoginCounter>();
    public DbSet<DeviceAuthorization> DeviceAuthorizations => Set<DeviceAuthorization>();
    public DbSet<TokenLink> TokenLinks => Set<TokenLink>();
    public DbSet<Federation.ExchangedSubjectToken> ExchangedSubjectTokens => Set<Federation.ExchangedSubjectToken>();
    public DbSet<Notifications.Webhook> Webhooks => Set<Notifications.Webhook>();
    public DbSet<Notifications.WebhookDelivery> WebhookDeliveries => Set<Notifications.WebhookDelivery>();
    public DbSet<Notifications.TokenNotice> TokenNotices => Set<Notifications.TokenNotice>();

    protected override void ConfigureConventions(ModelConfigurationBuilder builder)
    {
        builder.Properties<DateTime>().HaveConversion<UtcConverter>();
        builder.Properties<DateTime?>().HaveConversion<UtcConverter>();
    }

    protected override void OnModelCreating(ModelBuilder b)
    {
        b.Entity<User>().ToTable("users").Ignore(u => u.Source);
        b.Entity<ApiToken>().ToTable("api_tokens");
        b.Entity<TokenUsageDay>().ToTable("token_usage").HasKey(u => new { u.TokenId, u.Day });
        b.Entity<TokenScopeUsageDay>().ToTable("token_scope_usage").HasKey(u => new { u.TokenId, u.Scope, u.Day });
        b.Entity<AuditEvent>().ToTable("audit_events");
        b.Entity<SigningKey>().ToTable("signing_keys").HasKey(k => k.Kid);
        b.Entity<OAuthClient>().ToTable("oauth_clients");
        b.Entity<RevokedJwt>().ToTable("revoked_jwts").HasKey(r => r.Jti);
        b.Entity<StoredSession>().ToTable("sessions").HasKey(s => s.IdHash);
        b.Entity<StoredService>().ToTable("gateway_services");
        b.Entity<HandshakeCode>().ToTable("handshake_codes").HasKey(c => c.CodeHash);
        b.Entity<StoredDataProtectionKey>().ToTable("data_protection_keys");
        b.Entity<LoginCounter>().ToTable("login_throttle").HasKey(c => new { c.Kind, c.Subject });
        b.Entity<DeviceAuthorization>().ToTable("device_codes").HasKey(d => d.DeviceCodeHash);
        b.Entity<TokenLink>().ToTable("token_links").HasKey(l => l.LinkHash);
        b.Entity<Federation.ExchangedSubjectToken>().ToTable("exchanged_subject_tokens").HasKey(t => t.ReplayKey);
        b.Entity<Notifications.Webhook>().ToTable("webhooks");
        b.Entity<Notifications.WebhookDelivery>().ToTable("webhook_deliveries");
        b.Entity<Notifications.TokenNotice>().ToTable("token_notices").HasKey(n => new { n.TokenId, n.Notice });

        foreach (var entity in b.Model.GetEntityTypes())
        {
            foreach (var property in entity.GetProperties())
                property.SetColumnName(SnakeCase(property.Name));
        }
    }

    private static string SnakeCase(string name)
    {
        var sb = new StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0)
                sb.Append('_');
            sb.Append(char.ToLowerInvariant(name[i]));
        }
        return sb.ToString();
    }

    /// <summary>SQLite hands DateTimes back without a kind; every time in Portcullis is UTC.</summary>
    private sealed class UtcConverter() : ValueConverter<DateTime, DateTime>(
        v => v.Kind == DateTimeKind.Utc ? v : DateTime.SpecifyKind(v.ToUniversalTime(), DateTimeKind.Utc),
        v => DateTime.SpecifyKind(v, DateTimeKind.Utc));
}
