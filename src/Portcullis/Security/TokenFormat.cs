using System.Buffers;
using System.Security.Cryptography;
using System.Text;

// Every stackalloc in the verification path is fully written before it is read; zeroing it first is waste.
[module: System.Runtime.CompilerServices.SkipLocalsInit]

namespace Portcullis.Security;

/// <summary>What a token's prefix says it is (docs/decisions.md).</summary>
internal enum TokenKind : byte
{
    Personal = (byte)'p',
    Service = (byte)'s',
    ClientSecret = (byte)'c',
}

/// <summary>
/// The Portcullis token format: <c>{prefix}{kind}_</c> + 30 base62 characters from a CSPRNG + 6 base62
/// characters of CRC-32 over everything before the checksum. The checksum lets us reject typos and
/// random guesses without touching the cache or the database, and lets secret scanners avoid false positives.
/// </summary>
internal sealed class TokenFormat
{
    public const int RandomLength = 30;
    public const int ChecksumLength = 6;
    public const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    private static readonly SearchValues<char> Base62 = SearchValues.Create(Alphabet);

    public TokenFormat(string prefix)
    {
        if (string.IsNullOrEmpty(prefix) || prefix.Length > 8 || !prefix.All(char.IsAsciiLetterLower))
            throw new ArgumentException("A token prefix is 1 to 8 lowercase ASCII letters.", nameof(prefix));
        Prefix = prefix;
        TotalLength = prefix.Length + 2 + RandomLength + ChecksumLength;
    }

    public string Prefix { get; }

    /// <summary>Length of a whole token: prefix, kind letter, underscore, body and checksum.</summary>
    public int TotalLength { get; }

    public string RegexPattern => $@"\b({Prefix}[psc])_[0-9A-Za-z]{{{RandomLength + ChecksumLength}}}\b";

    public string Generate(TokenKind kind)
    {
        Span<char> text = stackalloc char[TotalLength];
        Prefix.CopyTo(text);
        text[Prefix.Length] = (char)(byte)kind;
        text[Prefix.Length + 1] = '_';
        var body = text.Slice(Prefix.Length + 2, RandomLength);
        RandomNumberGenerator.GetItems(Alphabet, body);
        WriteChecksum(text[..^ChecksumLength], text[^ChecksumLength..]);
        return new string(text);
    }

    /// <summary>
    /// True when <paramref name="text"/> has this instance's prefix, a known kind, the right length,
    /// only base62 characters and a matching checksum. Allocation-free.
    /// </summary>
    public bool TryRead(ReadOnlySpan<char> text, out TokenKind kind)
    {
        kind = default;
        if (text.Length != TotalLength || !text.StartsWith(Prefix, StringComparison.Ordinal) || text[Prefix.Length + 1] != '_')
            return false;
        var kindChar = text[Prefix.Length];
        if (kindChar is not ('p' or 's' or 'c'))
            return false;
        if (text[(Prefix.Length + 2)..].ContainsAnyExcept(Base62))
            return false;
        // Everything is ASCII now: narrow it for the checksum (a prefix is at most 8 letters, so 64 bytes suffice).
        var covered = text[..^ChecksumLength];
        Span<byte> ascii = stackalloc byte[64];
        ascii = ascii[..covered.Length];
        Ascii.FromUtf16(covered, ascii, out _);
        // Decode the six base62 digits and compare numbers: cheaper than formatting the expected text.
        ulong written = 0;
        foreach (var c in text[^ChecksumLength..])
            written = written * 62 + (ulong)Base62Value(c);
        if (written != System.IO.Hashing.Crc32.HashToUInt32(ascii))
            return false;
        kind = (TokenKind)(byte)kindChar;
        return true;
    }

    /// <summary>True when the text merely looks like one of our tokens (used to pick a verification path).</summary>
    public bool HasPrefix(ReadOnlySpan<char> text) =>
        text.Length > Prefix.Length + 1 && text.StartsWith(Prefix, StringComparison.Ordinal) && text[Prefix.Length + 1] == '_';

    /// <summary>Display hint that identifies a token without revealing it: prefix + first 4 random characters.</summary>
    public string Hint(string token) => string.Concat(token.AsSpan(0, Prefix.Length + 2 + 4), "…");

    private static int Base62Value(char c) => c <= '9' ? c - '0' : c <= 'Z' ? c - 'A' + 10 : c - 'a' + 36;

    private static uint Crc32Of(ReadOnlySpan<char> ascii)
    {
        Span<byte> bytes = stackalloc byte[ascii.Length];
        for (var i = 0; i < ascii.Length; i++)
            bytes[i] = (byte)ascii[i];
        return System.IO.Hashing.Crc32.HashToUInt32(bytes);
    }

    public static void WriteChecksum(ReadOnlySpan<char> text, Span<char> destination)
    {
        var crc = Crc32Of(text);
        for (var i = destination.Length - 1; i >= 0; i--)
        {
            destination[i] = Alphabet[(int)(crc % 62)];
            crc /= 62;
        }
    }

    /// <summary>SHA-256 of the token's text as UTF-8: the only form in which a secret is stored.</summary>
    public static TokenDigest Digest(ReadOnlySpan<char> token)
    {
        // Tokens fit the stack; longer texts (JWTs, session ids) use their exact size, pooled past 8 KiB.
        var max = Encoding.UTF8.GetMaxByteCount(token.Length);
        var size = max <= 512 ? max : Encoding.UTF8.GetByteCount(token);
        byte[]? rented = size <= 8192 ? null : System.Buffers.ArrayPool<byte>.Shared.Rent(size);
        try
        {
            Span<byte> buffer = rented ?? stackalloc byte[size];
            var length = Encoding.UTF8.GetBytes(token, buffer);
            Span<byte> hash = stackalloc byte[32];
            ShortSha256.Hash(buffer[..length], hash);
            return new TokenDigest(hash);
        }
        finally
        {
            if (rented is not null)
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
    }
}
