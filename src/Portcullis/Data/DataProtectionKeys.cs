using System.Data.Common;
using System.Text;
using System.Xml.Linq;
using Microsoft.AspNetCore.DataProtection.KeyManagement;
using Microsoft.AspNetCore.DataProtection.Repositories;
using Portcullis.Security;

namespace Portcullis.Data;

/// <summary>
/// Keeps the ASP.NET Core Data Protection key ring (antiforgery tokens, session cookies) in the
/// database, so that every instance on one PostgreSQL reads what another wrote: a form rendered by
/// one instance can be posted to another. Sealed like the JWT signing keys (<see cref="KeySealing"/>): a key that does
/// not unseal is never used (docs/decisions.md, "Keys at rest").
/// </summary>
internal sealed class DataProtectionKeys(PlainConnections connections, KeySealing sealing, ILogger<DataProtectionKeys> logger) : IXmlRepository
{
    // Plain SQL on a plain connection (Data/PlainConnections.cs): the host reads the ring before Kestrel listens.
    public IReadOnlyCollection<XElement> GetAllElements()
    {
        if (!sealing.WaitUntilReady())
            return [];
        using var connection = connections.Open();
        using var command = Sql.Command(connection, "SELECT friendly_name, xml FROM data_protection_keys ORDER BY id");
        using var reader = command.ExecuteReader();
        var elements = new List<XElement>();
        while (reader.Read())
        {
            var name = reader.GetString(0);
            if (sealing.Unseal(reader.GetString(1), KeySealing.DataProtection, name) is { } xml)
                elements.Add(XElement.Parse(Encoding.UTF8.GetString(xml)));
            else
                logger.LogError("Data Protection key {Name} in the database is not sealed with a key-encryption key of this server (written there by hand?): not used", name);
        }
        return elements;
    }

    public void StoreElement(XElement element, string friendlyName)
    {
        if (!sealing.WaitUntilReady())
            return;
        var sealedXml = sealing.Seal(Encoding.UTF8.GetBytes(element.ToString(SaveOptions.DisableFormatting)), KeySealing.DataProtection, friendlyName);
        using var connection = connections.Open();
        using var command = Sql.Command(connection, "INSERT INTO data_protection_keys (friendly_name, xml, created_at) VALUES (@name, @xml, @at)",
            ("@name", friendlyName), ("@xml", sealedXml), ("@at", DateTime.UtcNow));
        command.ExecuteNonQuery();
    }

    /// <summary>
    /// Creates the first key at start-up, once for all instances: on PostgreSQL under an advisory lock,
    /// so two instances starting together do not each make a key the other has not loaded.
    /// </summary>
    public static async Task EnsureKeyAsync(DbConnection connection, bool postgres, IKeyManager keys, CancellationToken cancellationToken)
    {
        if (postgres)
            await Sql.ExecuteAsync(connection, $"SELECT pg_advisory_lock({AdvisoryLockKey})", cancellationToken);
        try
        {
            var now = DateTimeOffset.UtcNow;
            if (!keys.GetAllKeys().Any(k => !k.IsRevoked && k.ActivationDate <= now && k.ExpirationDate > now.AddDays(2)))
                keys.CreateNewKey(now, now.AddDays(90));
        }
        finally
        {
            if (postgres)
                await Sql.ExecuteAsync(connection, $"SELECT pg_advisory_unlock({AdvisoryLockKey})", CancellationToken.None);
        }
    }

    // Any fixed number, different from the migrator's; the same for every instance.
    private const long AdvisoryLockKey = 0x70637573_64706b31;
}

/// <summary>A row of <c>data_protection_keys</c>: one key of the ring, its XML sealed (Security/KeySealing.cs).</summary>
internal sealed class StoredDataProtectionKey
{
    public long Id { get; init; }
    public required string FriendlyName { get; init; }
    public required string Xml { get; init; }
    public DateTime CreatedAt { get; init; }
}
