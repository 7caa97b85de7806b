using System.Globalization;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.EntityFrameworkCore;
using Portcullis.Audit;
using Portcullis.Auth;
using Portcullis.Data;
using Portcullis.Hosting;
using Portcullis.Security;

namespace Portcullis.Tokens;

/// <summary>
/// What a token actually used, and narrowing it to that (docs/token-policies.md, "Narrowing"): every check a request
/// relies on is noted per token and scope (<see cref="ScopeUses.Exercise"/>, written behind by <see cref="UsageRecorder"/>);
/// <c>GET /api/v1/tokens/{id}/suggested-scopes</c> reads the last 30 days, <c>POST .../narrow</c> takes the token down to
/// them, never wider, on every instance at once.
/// </summary>
internal static class ScopeNarrowing
{
    public const int Days = 30;

    public static RouteGroupBuilder MapTokenNarrowing(this RouteGroupBuilder tokens)
    {
        tokens.MapGet("/{id:long}/suggested-scopes", ReadSuggestionAsync)
            .Answers((StatusCodes.Status404NotFound, "No such token that the caller may see."));
        tokens.MapPost("/{id:long}/narrow", NarrowRequestAsync)
            .Answers((StatusCodes.Status404NotFound, "No such token that the caller may see."),
                (StatusCodes.Status409Conflict, "The token has ended, or it changed meanwhile."));
        return tokens;
    }

    /// <summary>The scope a requirement stands for, as a token's scopes name it: api, admin, services or services:NAME.</summary>
    public static string NameOf(ScopeRequirement requirement) => requirement.Flag switch
    {
        ScopeFlags.Api => Scopes.Api,
        ScopeFlags.Admin => Scopes.Admin,
        _ => requirement.Service is { } name ? Scopes.ServicePrefix + name : Scopes.Services,
    };

    private static async Task<Results<Ok<SuggestedScopesResponse>, ProblemHttpResult>> ReadSuggestionAsync(
        long id, HttpContext http, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken) =>
        await TokensApi.FindVisibleAsync(id, http, db, cancellationToken) is { } found
            ? TypedResults.Ok(await SuggestAsync(found.Token, db, time, cancellationToken))
            : TokensApi.NotFound(id);

    /// <summary>What <paramref name="token"/> relied on in the last <see cref="Days"/> days, and the narrowest scopes that cover it.</summary>
    internal static async Task<SuggestedScopesResponse> SuggestAsync(ApiToken token, PortcullisDb db, TimeProvider time, CancellationToken cancellationToken)
    {
        var first = DateOnly.FromDateTime(time.GetUtcNow().UtcDateTime).AddDays(1 - Days).ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        var rows = await db.TokenScopeUsage.AsNoTracking()
            .Where(u => u.TokenId == token.Id && string.Compare(u.Day, first) >= 0)
            .ToListAsync(cancellationToken);
        var used = rows.GroupBy(r => r.Scope)
            .Select(g => new ScopeUse(g.Key, g.Sum(r => r.Count), g.Max(r => r.Day)!))
            .OrderBy(u => u.Scope, StringComparer.Ordinal)
            .ToArray();
        var current = ScopeSet.Parse(token.Scopes);
        // What was used is within what the token had then; intersecting keeps it within what it has now.
        var suggested = ScopeSet.TryParse([.. used.Select(u => u.Scope)], out var set, out _) ? set.Intersect(current) : ScopeSet.Empty;
        return new SuggestedScopesResponse(token.Id, Days, [.. current.ToNames()], used, [.. suggested.ToNames()],
            Narrower: !suggested.IsEmpty && !suggested.Equals(current));
    }

    private static async Task<Results<Ok<TokenResponse>, ProblemHttpResult>> NarrowRequestAsync(long id, NarrowTokenRequest? request, HttpContext http,
        PortcullisDb db, AuditLog audit, InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken)
    {
        var (narrowed, error) = await NarrowAsync(id, request?.Scopes, http, db, audit, invalidation, time, cancellationToken);
        return error is not null ? error.ToProblem() : TypedResults.Ok(narrowed!);
    }

    /// <summary>
    /// Takes the token's scopes down to <paramref name="scopes"/>, or to what it used when none are given. Never wider; a
    /// compare-and-set on the scopes read, so a concurrent change is not overwritten; audited; every instance drops its
    /// cached copy at once. The API and the token's page both come here.
    /// </summary>
    internal static async Task<Checked<TokenResponse>> NarrowAsync(long id, string[]? scopes, HttpContext http, PortcullisDb db, AuditLog audit,
        InvalidationBus invalidation, TimeProvider time, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow().UtcDateTime;
        if (await TokensApi.FindVisibleAsync(id, http, db, cancellationToken) is not { } found)
            return new RuleError("id", $"There is no token {id} that you can see.", StatusCodes.Status404NotFound);
        var (token, owner) = found;
        if (token.Status(now) is var status && status != TokenStatus.Active)
            return RuleError.Conflict("id", $"Token {id} is {status}: there is nothing to narrow.");

        var current = ScopeSet.Parse(token.Scopes);
        ScopeSet target;
        if (scopes is null)
        {
            var suggestion = await SuggestAsync(token, db, time, cancellationToken);
            if (suggestion.Suggested.Length == 0)
                return RuleError.Conflict("scopes", $"Token {id} was not used in the last {Days} days, so there is nothing to narrow it to. Revoke it if it is not needed.");
            target = ScopeSet.Parse(string.Join(' ', suggestion.Suggested));
        }
        else if (!ScopeSet.TryParse(scopes, out target, out var scopeError))
            return new RuleError("scopes", scopeError!);
        if (target.IsEmpty)
            return new RuleError("scopes", "A token needs at least one scope; to take all of them away, revoke it.");
        if (!target.IsSubsetOf(current))
            return new RuleError("scopes", $"Narrowing never widens: '{target}' is not within the token's scopes '{current}'.");
        if (target.Equals(current))
            return TokenResponse.From(token, owner, now);

        // The change and its audit event commit together.
        await using (var tx = await db.Database.BeginTransactionAsync(cancellationToken))
        {
            var changed = await db.ApiTokens.Where(t => t.Id == id && t.Scopes == token.Scopes && t.ReplacedById == null)
                .ExecuteUpdateAsync(set => set.SetProperty(t => t.Scopes, target.ToString()), cancellationToken);
            if (changed != 1)
                return RuleError.Conflict("scopes", $"Token {id} changed while it was being narrowed. Look at it again.");
            db.AuditEvents.Add(audit.Create(http, AuditEvents.TokenNarrowed, owner, token.OwnerId, token.Id.ToString(CultureInfo.InvariantCulture),
                new { hint = token.Hint, from = current.ToString(), to = target.ToString() }));
            await db.SaveChangesAsync(cancellationToken);
            await tx.CommitAsync(cancellationToken);
        }
        await invalidation.TokenChangedAsync(token.TokenHash, cancellationToken);
        token.Scopes = target.ToString();
        return TokenResponse.From(token, owner, now);
    }
}
