using System.Security.Cryptography;
using System.Text;

namespace Portcullis.Security;

/// <summary>What a token's prefix says it is (SPEC §2).</summary>
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
        var rest = text[(Prefix.Length + 2)..];
        foreach (var c in rest)
        {
            if (!char.IsAsciiLetterOrDigit(c))
                return false;
        }
        Span<char> expected = stackalloc char[ChecksumLength];
        WriteChecksum(text[..^ChecksumLength], expected);
        if (!expected.SequenceEqual(text[^ChecksumLength..]))
            return false;
        kind = (TokenKind)(byte)kindChar;
        return true;
    }

    /// <summary>True when the text merely looks like one of our tokens (used to pick a verification path).</summary>
    public bool HasPrefix(ReadOnlySpan<char> text) =>
        text.Length > Prefix.Length + 1 && text.StartsWith(Prefix, StringComparison.Ordinal) && text[Prefix.Length + 1] == '_';

    /// <summary>Display hint that identifies a token without revealing it: prefix + first 4 random characters.</summary>
    public string Hint(string token) => string.Concat(token.AsSpan(0, Prefix.Length + 2 + 4), "…");

    public static void WriteChecksum(ReadOnlySpan<char> text, Span<char> destination)
    {
        Span<byte> ascii = stackalloc byte[text.Length];
        for (var i = 0; i < text.Length; i++)
            ascii[i] = (byte)text[i];
        var crc = Crc32.HashToUInt32(ascii);
        for (var i = destination.Length - 1; i >= 0; i--)
        {
            destination[i] = Alphabet[(int)(crc % 62)];
            crc /= 62;
        }
    }

    /// <summary>SHA-256 of the token's text as UTF-8: the only form in which a secret is stored.</summary>
    public static TokenDigest Digest(ReadOnlySpan<char> token)
    {
        var max = Encoding.UTF8.GetMaxByteCount(token.Length);
        Span<byte> buffer = max <= 512 ? stackalloc byte[max] : new byte[max];
        var length = Encoding.UTF8.GetBytes(token, buffer);
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(buffer[..length], hash);
        return new TokenDigest(hash);
    }
}
