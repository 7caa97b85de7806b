namespace Portcullis.Gateway;

/// <summary>
/// Which request paths the gateway forwards (docs/gateway.md, "Paths"). The upstream receives the service's
/// base path followed by the path exactly as Kestrel decoded and normalised it: whatever the service is
/// authorised on is what reaches it. A path that would mean something else to a server that decodes
/// again, or that reads <c>..;</c> as <c>..</c> (Tomcat), is refused rather than interpreted.
/// </summary>
internal static class GatewayPaths
{
    /// <summary>How many layers of percent-encoding are looked through (triple encoding and more).</summary>
    private const int MaxDecodingRounds = 4;

    /// <summary>Why <paramref name="path"/> (as Kestrel decoded it) cannot be forwarded, or null when it can.</summary>
    public static string? Refusal(string path)
    {
        if (path.AsSpan().IndexOfAny('\\', '\0') >= 0)
            return "The path contains a backslash or a NUL character, which the gateway does not forward.";
        if (HasDotSegmentWithParameters(path))
            return "The path contains a dot segment with parameters ('..;' or '.;'), which some servers read as '..'.";
        var current = path;
        for (var round = 0; round < MaxDecodingRounds && current.Contains('%'); round++)
        {
            var decoded = DecodeOnce(current, out var revealed, out var unsafeByte);
            if (unsafeByte)
                return "The path contains a percent-encoded '.', '/', '\\', ';', NUL or an overlong UTF-8 sequence (e.g. %2F, %252e, %c0%ae), which the gateway does not forward.";
            if (!revealed)
                break;
            current = decoded;
        }
        return null;
    }

    /// <summary>A segment that is <c>.</c> or <c>..</c> before its first <c>;</c>.</summary>
    private static bool HasDotSegmentWithParameters(string path)
    {
        foreach (var range in path.AsSpan().Split('/'))
        {
            var segment = path.AsSpan(range);
            var semicolon = segment.IndexOf(';');
            if (semicolon >= 0 && segment[..semicolon] is "." or "..")
                return true;
        }
        return false;
    }

    /// <summary>
    /// Decodes every <c>%XX</c> once. <paramref name="unsafeByte"/>: one of them is a byte that changes a path's
    /// meaning, or starts an overlong UTF-8 sequence. <paramref name="revealed"/>: one of them is another '%', so
    /// a server that decodes again would see more.
    /// </summary>
    private static string DecodeOnce(string text, out bool revealed, out bool unsafeByte)
    {
        revealed = false;
        unsafeByte = false;
        var bytes = new List<byte>(text.Length);
        var previousDecoded = -1;
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == '%' && i + 2 < text.Length && IsHex(text[i + 1]) && IsHex(text[i + 2]))
            {
                var b = (byte)Convert.ToInt32(text.Substring(i + 1, 2), 16);
                if (b is (byte)'.' or (byte)'/' or (byte)'\\' or (byte)';' or 0 or 0xC0 or 0xC1
                    || (previousDecoded == 0xE0 && b is >= 0x80 and <= 0x9F) || (previousDecoded == 0xF0 && b is >= 0x80 and <= 0x8F))
                    unsafeByte = true;
                revealed |= b == (byte)'%';
                bytes.Add(b);
                previousDecoded = b;
                i += 2;
                continue;
            }
            previousDecoded = -1;
            bytes.Add(text[i] < 0x80 ? (byte)text[i] : (byte)'?');
        }
        return System.Text.Encoding.Latin1.GetString([.. bytes]);
    }

    private static bool IsHex(char c) => char.IsAsciiHexDigit(c);

    /// <summary>
    /// The last check before sending: the upstream path must lie under the service's base path. Everything
    /// above makes this hold; this makes sure of it, whatever a later change does to the code above.
    /// </summary>
    public static bool StaysUnder(Uri upstream, string basePath) =>
        basePath.Length == 0 || upstream.AbsolutePath.StartsWith(basePath + "/", StringComparison.Ordinal) || upstream.AbsolutePath == basePath;
}
