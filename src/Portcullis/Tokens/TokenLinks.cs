using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;
using Portcullis.Web;
using Portcullis.Web.Pages;

namespace Portcullis.Tokens;

/// <summary>What the page of a link that waits to be opened shows about its token.</summary>
public sealed record ClaimView(string Name, string Owner, IReadOnlyList<string> Scopes, DateTime? TokenExpiresAt, DateTime LinkExpiresAt, string CreatedBy);

/// <summary>A token handed over as a one-time link (docs/token-policies.md, "Handing a token over").</summary>
internal sealed class TokenLink
{
    /// <summary>SHA-256 (hex) of the secret in the link.</summary>
    public required string LinkHash { get; init; }
    public long TokenId { get; init; }

    /// <summary>The token, sealed with the key-encryption key, until someone opens the link; null after.</summary>
    public string? SealedToken { get; set; }
    public required string CreatedBy { get; init; }
    public DateTime CreatedAt { get; init; }
    public DateTime ExpiresAt { get; init; }
    public DateTime? ClaimedAt { get; set; }
    public string? ClaimedFrom { get; set; }
}

/// <summary>
/// Handing a token over as a link instead of showing it (Vault's response wrapping): the token is created revoked at the
/// link's end, sealed into <c>token_links</c>, and <c>/claim/{secret}</c> reveals it once, to whoever opens it first, and
/// takes the revocation away in the same transaction. A link nobody opened ends with its token. A page asks before it
/// reveals (a chat's link preview must not use it up); a program posts with <c>Accept: application/json</c>.
/// </summary>
internal static class TokenLinks
{
    public const string Link = "link";
    public const string Shown = "token";
    public const long MaxMinutes = 1440;
    public const long DefaultMinutes = 60;
    public const string ClaimPath = "/claim";
    private const string SealPurpose = "token-link";

    /// <summary>The link's lifetime a request asks for, or the rule it breaks; null when the token is to be shown.</summary>
    public static (TimeSpan? Lifetime, RuleError? Error) LifetimeOf(CreateTokenRequest request)
    {
        if (request.Deliver is null or Shown)
        {
            return request.LinkExpiresInMinutes is null ? (null, null)
                : (null, new RuleError("link_expires_in_minutes", "link_expires_in_minutes goes with \"deliver\": \"link\"."));
        }
        if (request.Deliver != Link)
            return (null, new RuleError("deliver", "deliver is \"token\" (shown in the answer, the default) or \"link\" (a one-time link)."));
        return request.LinkExpiresInMinutes is < 1 or > MaxMinutes
            ? (null, new RuleError("link_expires_in_minutes", $"link_expires_in_minutes must be between 1 and {MaxMinutes} (24 hours)."))
            : (TimeSpan.FromMinutes(request.LinkExpiresInMinutes ?? DefaultMinutes), null);
    }

    /// <summary>
    /// Adds the link for a token being created (in the caller's transaction) and returns its URL. The token must have been
    /// created revoked at <paramref name="expiresAt"/>: unclaimed, it ends with the link.
    /// </summary>
    public static string Add(PortcullisDb db, HttpContext http, ApiToken token, string plaintext, DateTime now, DateTime expiresAt)
    {
        var secret = Base64Url.EncodeToString(RandomNumberGenerator.GetBytes(32));
        var hash = HashOf(secret);
        var sealing = http.RequestServices.GetRequiredService<KeySealing>();
        db.TokenLinks.Add(new TokenLink
        {
            LinkHash = hash,
            TokenId = token.Id,
            SealedToken = sealing.Seal(Encoding.UTF8.GetBytes(plaintext), SealPurpose, hash),
            CreatedBy = http.Credential().Owner.Name,
            CreatedAt = now,
            ExpiresAt = expiresAt,
        });
        return $"{http.RequestServices.GetRequiredService<PublicUrl>().Value}{ClaimPath}/{secret}";
    }

    /// <summary>The link state of a token, if it was handed over as a link.</summary>
    public static async Task<TokenLinkResponse?> StateAsync(PortcullisDb db, long tokenId, CancellationToken cancellationToken) =>
        await db.TokenLinks.AsNoTracking().Where(l => l.TokenId == tokenId)
            .Select(l => new TokenLinkResponse(l.ExpiresAt, l.ClaimedAt, l.ClaimedFrom)).FirstOrDefaultAsync(cancellationToken);

    /// <summary>Whether the token waits for its link to be opened (it may not be rotated then).</summary>
    public static Task<bool> IsPendingAsync(PortcullisDb db, long tokenId, CancellationToken cancellationToken) =>
        db.TokenLinks.AnyAsync(l => l.TokenId == tokenId && l.ClaimedAt == null, cancellationToken);

    public static IEndpointRouteBuilder MapTokenLinks(this IEndpointRouteBuilder app)
    {
        var claim = app.MapGroup(ClaimPath).AsWebPages();
        claim.MapGet("/{secret}", ShowAsync);
        // No antiforgery: whoever can post here holds the link, which is all a claim needs.
        claim.MapPost("/{secret}", ClaimAsync).DisableAntiforgery();
        return app;
    }

    private static string HashOf(string secret) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(secret)));

    /// <summary>What the link holds, before anything is revealed.</summary>
    private static async Task<IResult> ShowAsync(string secret, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken)
    {
        var found = await FindAsync(db, secret, cancellationToken);
        return Page(http, found, time.GetUtcNow().UtcDateTime, revealed: null);
    }

    /// <summary>Reveals the token to the first who asks, on any instance: the claim is a compare-and-set on "not yet opened".</summary>
    private static async Task<IResult> ClaimAsync(string secret, HttpContext http, PortcullisDb db, AuditLog audit, InvalidationBus invalidation,
        KeySealing sealing, TimeProvider time, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var wantsJson = http.Request.Headers.Accept.ToString().Contains("application/json", StringComparison.OrdinalIgnoreCase);
        var hash = secret.Length is > 0 and <= 100 ? HashOf(secret) : "";
        var address = http.ClientAddress()?.ToString();
        ClaimedToken? claimed = null;
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            // Of two claims (on any instances) that both read the sealed token, one marks the link opened; the other finds it opened.
            var link = await db.TokenLinks.AsNoTracking().SingleOrDefaultAsync(l => l.LinkHash == hash, cancellationToken);
            var won = link is not null && await db.TokenLinks.Where(l => l.LinkHash == hash && l.ClaimedAt == null && l.ExpiresAt > now)
                .ExecuteUpdateAsync(set => set.SetProperty(l => l.SealedToken, (string?)null).SetProperty(l => l.ClaimedAt, now)
                    .SetProperty(l => l.ClaimedFrom, address), cancellationToken) == 1;
            // The token was created revoked at the link's end, which is still ahead; revoked by someone meanwhile, it ends
            // no later than now. Unless it was, it now lives.
            if (won && link!.SealedToken is { } stored && sealing.Unseal(stored, SealPurpose, hash) is { } plaintext
                && await db.ApiTokens.Where(t => t.Id == link.TokenId && t.RevokedAt > now)
                    .ExecuteUpdateAsync(set => set.SetProperty(t => t.RevokedAt, (DateTime?)null), cancellationToken) == 1)
            {
                var token = await db.ApiTokens.AsNoTracking().SingleAsync(t => t.Id == link.TokenId, cancellationToken);
                var owner = await db.Users.AsNoTracking().Where(u => u.Id == token.OwnerId).Select(u => u.Username).SingleAsync(cancellationToken);
                db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenLinkClaimed, owner, token.OwnerId, token.Id.ToString(CultureInfo.InvariantCulture),
                    new { name = token.Name, hint = token.Hint, created_by = link.CreatedBy }));
                await db.SaveChangesAsync(cancellationToken);
                await tx.CommitAsync(cancellationToken);
                await invalidation.TokenChangedAsync(token.TokenHash, cancellationToken);
                claimed = new ClaimedToken(CreatedTokenResponse.From(token, Encoding.UTF8.GetString(plaintext), owner), link.CreatedBy);
            }
        }
        http.Response.Headers.CacheControl = "no-store";
        if (claimed is not null)
        {
            return wantsJson ? TypedResults.Json(claimed.Token) : Page(http, found: null, now, claimed);
        }
        var found = await FindAsync(db, secret, cancellationToken);
        if (wantsJson)
        {
            return ProblemResponses.Problem(found is null ? StatusCodes.Status404NotFound : StatusCodes.Status410Gone,
                found is null ? "Not found" : "Gone", Explain(found, now));
        }
        return Page(http, found, now, revealed: null);
    }

    private sealed record ClaimedToken(CreatedTokenResponse Token, string CreatedBy);

    /// <summary>The link and what it is for, or null when there is no such link.</summary>
    private static async Task<LinkView?> FindAsync(PortcullisDb db, string secret, CancellationToken cancellationToken)
    {
        if (secret.Length is 0 or > 100)
            return null;
        var hash = HashOf(secret);
        return await db.TokenLinks.AsNoTracking().Where(l => l.LinkHash == hash)
            .Join(db.ApiTokens, l => l.TokenId, t => t.Id, (l, t) => new { l, t })
            .Join(db.Users, x => x.t.OwnerId, u => u.Id, (x, u) => new LinkView(x.l, x.t.Name, u.Username, x.t.Scopes, x.t.ExpiresAt, x.t.RevokedAt))
            .FirstOrDefaultAsync(cancellationToken);
    }

    internal sealed record LinkView(TokenLink Link, string Name, string Owner, string Scopes, DateTime? TokenExpiresAt, DateTime? RevokedAt);

    /// <summary>Why a link reveals nothing: never existed, opened already, expired, or its token revoked.</summary>
    private static string Explain(LinkView? found, DateTime now) => found switch
    {
        null => "There is no such link. Check that it was copied whole.",
        { Link.ClaimedAt: { } at } => FormattableString.Invariant(
            $"This link was opened on {at:yyyy-MM-dd HH:mm} UTC and cannot be opened again. If that was not you, tell {found.Link.CreatedBy}: the token should be revoked."),
        { Link.ExpiresAt: var end } when end <= now => FormattableString.Invariant(
            $"This link expired on {end:yyyy-MM-dd HH:mm} UTC without being opened, and its token ended with it. Ask {found.Link.CreatedBy} for a new one."),
        _ => $"The token of this link was revoked before the link was opened. Ask {found.Link.CreatedBy} for a new one.",
    };

    private static IResult Page(HttpContext http, LinkView? found, DateTime now, ClaimedToken? revealed)
    {
        if (revealed is not null)
            return PageResults.Render<ClaimPage>(http, new { Revealed = revealed.Token, CreatedBy = revealed.CreatedBy });
        var waiting = found is { Link.ClaimedAt: null } && found.Link.ExpiresAt > now && found.RevokedAt > now;
        return waiting
            ? PageResults.Render<ClaimPage>(http, new
            {
                Waiting = new ClaimView(found!.Name, found.Owner, found.Scopes.Split(' '), found.TokenExpiresAt, found.Link.ExpiresAt, found.Link.CreatedBy),
            })
            : PageResults.Render<MessagePage>(http, new { Title = "This link reveals nothing", Text = Explain(found, now), Back = "/", BackText = "Portcullis" },
                found is null ? StatusCodes.Status404NotFound : StatusCodes.Status410Gone);
    }
}
