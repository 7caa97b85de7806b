using System.Security.Cryptography;
using Microsoft.Extensions.Options;
using Portcullis.Hosting;
using Portcullis.Auth;

namespace Portcullis.Security;

internal enum PasswordCheck
{
    Failed,
    Success,
    SuccessRehashNeeded,
}

/// <summary>
/// PBKDF2-HMAC-SHA512 at OWASP strength (210,000 iterations by default) with a 16-byte random salt.
/// Stored as <c>pbkdf2-sha512$ITERATIONS$SALT$HASH</c> (base64), so the iteration count can rise later
/// and old hashes are upgraded at the next successful login.
///
/// Hashing is deliberately slow, so it runs behind a concurrency limit: a flood of logins queues here
/// instead of taking every core away from token verification.
/// </summary>
internal sealed class PasswordHasher(IOptions<AuthOptions> options) : IDisposable
{
    private const string Scheme = "pbkdf2-sha512";
    private const int SaltSize = 16;
    private const int HashSize = 64;

    private readonly SemaphoreSlim _gate = new(options.Value.MaxConcurrentPasswordHashes, options.Value.MaxConcurrentPasswordHashes);
    private readonly int _iterations = options.Value.PasswordIterations;
    private readonly TimeSpan _queueTimeout = options.Value.PasswordHashQueueTimeout;
    private readonly Lazy<string> _dummyHash = new(() => HashCore("not a password " + Guid.NewGuid(), options.Value.PasswordIterations));

    private long _checks;

    /// <summary>Passwords checked so far, dummy checks included (exported at /metrics).</summary>
    public long Checks => Interlocked.Read(ref _checks);

    public const int MinLength = 8;
    public const int MaxLength = 1024;

    public static string? Validate(string? password) => password switch
    {
        null or "" => "A password is required.",
        { Length: < MinLength } => $"A password needs at least {MinLength} characters.",
        { Length: > MaxLength } => $"A password may have at most {MaxLength} characters.",
        _ => null,
    };

    public async Task<string> HashAsync(string password, CancellationToken cancellationToken)
    {
        if (!await _gate.WaitAsync(_queueTimeout, cancellationToken))
            throw new PasswordHasherBusyException();
        try
        {
            return HashCore(password, _iterations);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// Checks <paramref name="password"/> against <paramref name="stored"/>. With no stored hash (unknown
    /// user, service principal) it still spends the time of one hash, so timing does not reveal which.
    /// </summary>
    public async Task<PasswordCheck> VerifyAsync(string? stored, string password, CancellationToken cancellationToken)
    {
        if (!await _gate.WaitAsync(_queueTimeout, cancellationToken))
            throw new PasswordHasherBusyException();
        try
        {
            Interlocked.Increment(ref _checks);
            if (stored is null || !TryDecode(stored, out var iterations, out var salt, out var expected))
            {
                TryDecode(_dummyHash.Value, out iterations, out salt, out expected);
                Derive(password, salt, iterations);
                return PasswordCheck.Failed;
            }
            var actual = Derive(password, salt, iterations);
            if (!CryptographicOperations.FixedTimeEquals(actual, expected))
                return PasswordCheck.Failed;
            return iterations < _iterations ? PasswordCheck.SuccessRehashNeeded : PasswordCheck.Success;
        }
        finally
        {
            _gate.Release();
        }
    }

    private static string HashCore(string password, int iterations)
    {
        var salt = RandomNumberGenerator.GetBytes(SaltSize);
        var hash = Derive(password, salt, iterations);
        return $"{Scheme}${iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}";
    }

    private static byte[] Derive(string password, byte[] salt, int iterations) =>
        Rfc2898DeriveBytes.Pbkdf2(password, salt, iterations, HashAlgorithmName.SHA512, HashSize);

    private static bool TryDecode(string stored, out int iterations, out byte[] salt, out byte[] hash)
    {
        iterations = 0;
        salt = hash = [];
        var parts = stored.Split('$');
        if (parts.Length != 4 || parts[0] != Scheme || !int.TryParse(parts[1], out iterations) || iterations < 1)
            return false;
        try
        {
            salt = Convert.FromBase64String(parts[2]);
            hash = Convert.FromBase64String(parts[3]);
            return hash.Length == HashSize;
        }
        catch (FormatException)
        {
            return false;
        }
    }

    public void Dispose() => _gate.Dispose();
}

/// <summary>Every hashing slot stayed busy for the whole queue timeout; the caller should answer 503 with Retry-After.</summary>
internal sealed class PasswordHasherBusyException() : Exception("Too many password checks are running.");
